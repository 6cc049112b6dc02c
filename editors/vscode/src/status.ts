// The status bar's state machine, as plain data: events in (the server's `nib/status` and
// `nib/index` notifications, the client's life cycle, the enable switch), one view out.
// No `vscode` import: the unit tests drive it directly.

export type ModelState = "unknown" | "loading" | "ready" | "error";
export type ServerState = "starting" | "running" | "restarting" | "stopped" | "failed";

export interface IndexProgress {
  state: "indexing" | "done";
  done: number;
  total: number;
  files?: number;
  symbols?: number;
  seconds?: number;
}

export interface StatusView {
  /** Status bar text, with a codicon. */
  text: string;
  /** Accessible label; starts with `nib: ` and the state word (the end-to-end test reads it). */
  label: string;
  tooltip: string;
  error: boolean;
}

export class StatusModel {
  server: ServerState = "starting";
  model: ModelState = "unknown";
  modelMessage = "";
  index: IndexProgress | undefined;
  enabled = true;
  /** Why the server last stopped, or why it could not start. */
  problem = "";

  /** `nib/status` from the server: `{state: "loading" | "ready" | "error", message}`. */
  onServerStatus(params: unknown): void {
    const p = (params ?? {}) as { state?: unknown; message?: unknown };
    const state = typeof p.state === "string" ? p.state : "";
    if (state === "loading" || state === "ready" || state === "error") {
      this.model = state;
    }
    if (state === "ready" || state === "loading") {
      // A server that talks is running, whatever came before.
      this.server = "running";
      if (state === "ready") {
        this.problem = "";
      }
    }
    this.modelMessage = typeof p.message === "string" ? p.message : "";
  }

  /** `nib/index` from the server: progress of the workspace index. */
  onIndex(params: unknown): void {
    const p = (params ?? {}) as Record<string, unknown>;
    const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
    if (p.state !== "indexing" && p.state !== "done") {
      return;
    }
    this.index = {
      state: p.state,
      done: num(p.done) ?? 0,
      total: num(p.total) ?? 0,
      files: num(p.files),
      symbols: num(p.symbols),
      seconds: num(p.seconds),
    };
  }

  onStarting(): void {
    // After a crash the error stays on show until the new server's model is ready.
    if (this.server !== "restarting") {
      this.server = "starting";
    }
    this.model = "unknown";
    this.modelMessage = "";
    this.index = undefined;
  }

  onRunning(): void {
    this.server = this.server === "restarting" ? "restarting" : "running";
  }

  /** The server's connection closed unexpectedly; `restarting` says whether it comes back by itself. */
  onExit(problem: string, restarting: boolean): void {
    this.server = restarting ? "restarting" : "failed";
    this.problem = problem;
    this.model = "unknown";
  }

  onStartFailed(problem: string): void {
    this.server = "failed";
    this.problem = problem;
  }

  onStopped(): void {
    this.server = "stopped";
  }

  view(): StatusView {
    const make = (icon: string, word: string, detail: string, error = false): StatusView => ({
      text: `$(${icon}) nib`,
      label: `nib: ${word}${detail ? ` (${detail})` : ""}`,
      tooltip: `nib: ${word}${detail ? `\n${detail}` : ""}\nClick for details.`,
      error,
    });
    switch (this.server) {
      case "failed":
        return make("error", "error", this.problem, true);
      case "restarting":
        return make("error", "error", `${this.problem}; restarting`, true);
      case "stopped":
        return make("circle-slash", "stopped", "the server is not running");
      case "starting":
        return make("loading~spin", "starting", "");
      case "running":
        break;
    }
    if (this.problem !== "" && this.model !== "ready") {
      return make("error", "error", `${this.problem}; restarting`, true);
    }
    if (this.model === "error") {
      return make("error", "error", this.modelMessage, true);
    }
    if (this.model !== "ready") {
      return make("loading~spin", "loading", this.modelMessage || "loading the model");
    }
    if (!this.enabled) {
      return make("circle-slash", "disabled", "completions are off (nib: Toggle completions)");
    }
    if (this.index?.state === "indexing") {
      const pct = this.index.total > 0 ? Math.floor((100 * this.index.done) / this.index.total) : 0;
      const v = make("sync~spin", "indexing", `${this.index.done}/${this.index.total} files`);
      return { ...v, text: `$(sync~spin) nib ${pct}%` };
    }
    const indexed =
      this.index?.state === "done"
        ? `; indexed ${this.index.files ?? this.index.done} files, ${this.index.symbols ?? 0} symbols`
        : "";
    return make("check", "ready", `${this.modelMessage}${indexed}`);
  }
}
