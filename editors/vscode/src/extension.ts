// nib's VS Code extension: starts `nib serve`, lets vscode-languageclient turn the server's LSP
// 3.18 inline completions into ghost text, and shows the server's state in the status bar.
// It holds no completion logic: prompts, models and post-processing live in the server.

import * as fs from "node:fs";
import * as cp from "node:child_process";
import * as vscode from "vscode";
import {
  CloseAction,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  State,
  type LanguageClientOptions,
  type ServerOptions,
} from "vscode-languageclient/node";
import { insertedChars, onCrash, resolveServerPath, serverSettings, statsSummary } from "./config";
import { StatusModel } from "./status";

let nib: Nib | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  nib = new Nib(context);
  await nib.start();
}

export async function deactivate(): Promise<void> {
  await nib?.stop();
  nib = undefined;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

class Nib {
  private client: LanguageClient | undefined;
  private readonly status = new StatusModel();
  private readonly item: vscode.StatusBarItem;
  private readonly log: vscode.LogOutputChannel;
  private crashes: number[] = [];

  constructor(private readonly context: vscode.ExtensionContext) {
    this.log = vscode.window.createOutputChannel("nib", { log: true });
    this.item = vscode.window.createStatusBarItem("nib.status", vscode.StatusBarAlignment.Right, 100);
    this.item.name = "nib";
    this.item.command = "nib.showDetails";
    this.status.enabled = this.config().get<boolean>("enable", true);
    this.render();
    this.item.show();
    const cmd = (id: string, f: () => unknown): void => {
      context.subscriptions.push(vscode.commands.registerCommand(id, f));
    };
    cmd("nib.toggle", () => this.toggle());
    cmd("nib.pullModel", () => this.pullModel());
    cmd("nib.showStats", () => this.showStats());
    cmd("nib.restartServer", () => this.restart());
    cmd("nib.showDetails", () => this.showDetails());
    cmd("nib.acceptWord", () => this.acceptPart("editor.action.inlineSuggest.acceptNextWord"));
    cmd("nib.acceptLine", () => this.acceptPart("editor.action.inlineSuggest.acceptNextLine"));
    context.subscriptions.push(
      this.item,
      this.log,
      vscode.workspace.onDidChangeConfiguration((e) => {
        this.configurationChanged(e);
      }),
    );
  }

  private config(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration("nib");
  }

  private settings(): Record<string, unknown> {
    return serverSettings(JSON.parse(JSON.stringify(this.config())) as Record<string, unknown>);
  }

  private render(): void {
    const v = this.status.view();
    this.item.text = v.text;
    this.item.tooltip = v.tooltip;
    this.item.accessibilityInformation = { label: v.label };
    this.item.backgroundColor = v.error ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  private binary(): string | undefined {
    const found = resolveServerPath(
      this.config().get<string | null>("serverPath"),
      process.env.PATH,
      this.context.extensionPath,
      isExecutable,
    );
    if ("error" in found) {
      this.status.onStartFailed(found.error);
      this.render();
      this.log.error(found.error);
      void vscode.window.showErrorMessage(`nib: ${found.error}`, "Open Settings").then((pick) => {
        if (pick) {
          void vscode.commands.executeCommand("workbench.action.openSettings", "nib.serverPath");
        }
      });
      return undefined;
    }
    this.log.info(`server: ${found.path} (from ${found.source})`);
    return found.path;
  }

  async start(): Promise<void> {
    const command = this.binary();
    if (command === undefined) {
      return;
    }
    const serverOptions: ServerOptions = { command, args: ["serve"] };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
      initializationOptions: this.settings(),
      outputChannel: this.log,
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue }),
        closed: () => {
          const next = onCrash(this.crashes, Date.now());
          this.crashes = next.crashes;
          const why = "the server exited unexpectedly";
          this.status.onExit(why, next.restart);
          this.render();
          this.log.error(`${why}; ${next.restart ? "restarting it" : "not restarting: it crashed 5 times in 3 minutes"}`);
          if (next.restart) {
            return { action: CloseAction.Restart, handled: true };
          }
          return {
            action: CloseAction.DoNotRestart,
            message: "nib: the server keeps crashing; see the nib output, then run `nib: Restart the language server`.",
          };
        },
      },
    };
    const client = new LanguageClient("nib", "nib", serverOptions, clientOptions);
    this.client = client;
    client.onDidChangeState((e) => {
      if (e.newState === State.Starting) {
        this.status.onStarting();
      } else if (e.newState === State.Running) {
        this.status.onRunning();
      } else if (e.newState === State.Stopped && this.status.server === "running") {
        this.status.onStopped();
      }
      this.render();
    });
    client.onNotification("nib/status", (p: unknown) => {
      this.status.onServerStatus(p);
      this.render();
    });
    client.onNotification("nib/index", (p: unknown) => {
      this.status.onIndex(p);
      this.render();
    });
    try {
      await client.start();
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      this.status.onStartFailed(`could not start ${command}: ${message}`);
      this.render();
      this.log.error(this.status.problem);
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client?.needsStop()) {
      await client.stop();
    }
  }

  private async restart(): Promise<void> {
    this.crashes = [];
    await this.stop();
    await this.start();
  }

  private configurationChanged(e: vscode.ConfigurationChangeEvent): void {
    if (!e.affectsConfiguration("nib")) {
      return;
    }
    this.status.enabled = this.config().get<boolean>("enable", true);
    this.render();
    if (e.affectsConfiguration("nib.serverPath")) {
      void this.restart();
      return;
    }
    if (this.client?.state === State.Running) {
      void this.client.sendNotification("workspace/didChangeConfiguration", { settings: { nib: this.settings() } });
    }
  }

  private async toggle(): Promise<void> {
    const on = this.config().get<boolean>("enable", true);
    await this.config().update("enable", !on, vscode.ConfigurationTarget.Global);
    void vscode.window.setStatusBarMessage(`nib: completions ${on ? "off" : "on"}`, 3000);
  }

  private async execute(command: string, args: unknown[] = []): Promise<unknown> {
    if (this.client?.state !== State.Running) {
      throw new Error("the server is not running");
    }
    return this.client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
  }

  private async showStats(): Promise<void> {
    try {
      const stats = await this.execute("nib.stats");
      void vscode.window.showInformationMessage(statsSummary(stats));
    } catch (e) {
      void vscode.window.showErrorMessage(`nib: no statistics: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** Accepts part of the suggestion with VS Code's own command and reports what it inserted. */
  private async acceptPart(command: string): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const line = editor?.selection.active.line;
    const before = editor && line !== undefined ? editor.document.lineAt(line).text : "";
    await vscode.commands.executeCommand(command);
    if (!editor || line === undefined) {
      return;
    }
    const chars = insertedChars(before, editor.document.lineAt(line).text);
    if (chars > 0) {
      void this.execute("nib.accept", [{ chars, partial: true }]).catch(() => undefined);
    }
  }

  private async pullModel(): Promise<void> {
    const command = this.binary();
    if (command === undefined) {
      return;
    }
    const ok = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: "nib: downloading the default model", cancellable: true },
      (progress, token) =>
        new Promise<boolean>((resolve) => {
          const child = cp.spawn(command, ["model", "pull"], { stdio: ["ignore", "pipe", "pipe"] });
          token.onCancellationRequested(() => {
            child.kill();
          });
          const onData = (chunk: Buffer): void => {
            const text = chunk.toString().split(/[\r\n]+/).filter((l) => l.trim() !== "").pop();
            if (text) {
              progress.report({ message: text.trim().slice(0, 120) });
            }
            this.log.info(chunk.toString().trimEnd());
          };
          child.stdout.on("data", onData);
          child.stderr.on("data", onData);
          child.on("error", (e) => {
            this.log.error(`nib model pull: ${e.message}`);
            resolve(false);
          });
          child.on("close", (code) => {
            resolve(code === 0);
          });
        }),
    );
    if (ok) {
      void vscode.window.showInformationMessage("nib: the model is ready; restarting the server.");
      await this.restart();
    } else {
      void vscode.window.showErrorMessage("nib: the download failed; see the nib output.", "Show Output").then((p) => {
        if (p) {
          this.log.show();
        }
        return undefined;
      });
    }
  }

  private async showDetails(): Promise<void> {
    const v = this.status.view();
    const items: (vscode.QuickPickItem & { run?: () => unknown })[] = [
      { label: v.label, detail: v.tooltip.split("\n").slice(1, -1).join(" ") || undefined },
      { label: "", kind: vscode.QuickPickItemKind.Separator },
      {
        label: "$(output) Show the log",
        run: () => {
          this.log.show();
        },
      },
      { label: "$(debug-restart) Restart the language server", run: () => this.restart() },
      { label: `$(${this.status.enabled ? "circle-slash" : "check"}) ${this.status.enabled ? "Turn completions off" : "Turn completions on"}`, run: () => this.toggle() },
      { label: "$(graph) Show acceptance statistics", run: () => this.showStats() },
      { label: "$(cloud-download) Download the default model", run: () => this.pullModel() },
      { label: "$(settings-gear) Open settings", run: () => vscode.commands.executeCommand("workbench.action.openSettings", "nib.") },
    ];
    const pick = await vscode.window.showQuickPick(items, { title: "nib" });
    await pick?.run?.();
  }
}
