// Pure helpers of the extension: where the server binary is, which settings reach the server,
// and when a crashed server is restarted. Nothing here imports `vscode`, so the unit tests run
// in plain Node.

import * as path from "node:path";

/** Settings of the `nib` section that only the extension reads; the server never sees them. */
export const CLIENT_ONLY_SETTINGS: readonly string[] = ["serverPath"];

export type Resolved = { path: string; source: "setting" | "PATH" | "bundled" } | { error: string };

/**
 * Finds the `nib` binary: the `nib.serverPath` setting when set (it must exist), else `nib` on
 * `PATH`, else `bin/nib` next to the extension. `isExecutable` is the only I/O.
 */
export function resolveServerPath(
  configured: string | null | undefined,
  envPath: string | undefined,
  extensionDir: string,
  isExecutable: (file: string) => boolean,
  platform: NodeJS.Platform = process.platform,
): Resolved {
  const exe = platform === "win32" ? "nib.exe" : "nib";
  if (configured !== null && configured !== undefined && configured.trim() !== "") {
    const file = configured.trim();
    return isExecutable(file)
      ? { path: file, source: "setting" }
      : { error: `nib.serverPath is set to ${file}, which is not an executable file` };
  }
  const sep = platform === "win32" ? ";" : ":";
  for (const dir of (envPath ?? "").split(sep)) {
    if (dir === "") {
      continue;
    }
    const file = path.join(dir, exe);
    if (isExecutable(file)) {
      return { path: file, source: "PATH" };
    }
  }
  const bundled = path.join(extensionDir, "bin", exe);
  if (isExecutable(bundled)) {
    return { path: bundled, source: "bundled" };
  }
  return {
    error:
      "the nib binary was not found: set nib.serverPath, put `nib` on PATH " +
      "(cargo install --path lsp), or place it in the extension's bin/ folder",
  };
}

/** The settings object sent to the server: the `nib` section without the client-only keys. */
export function serverSettings(section: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(section)) {
    if (!CLIENT_ONLY_SETTINGS.includes(key) && typeof value !== "function") {
      out[key] = value;
    }
  }
  return out;
}

/**
 * Restart policy after the server's connection closes: restart unless it already crashed
 * `maxCrashes` times within `windowMs` (then the user restarts it by command).
 * Returns the crash times to keep and the decision.
 */
export function onCrash(
  crashes: readonly number[],
  now: number,
  maxCrashes = 5,
  windowMs = 3 * 60_000,
): { crashes: number[]; restart: boolean } {
  const recent = crashes.filter((t) => now - t < windowMs);
  recent.push(now);
  return { crashes: recent, restart: recent.length <= maxCrashes };
}

/** Characters a partial accept inserted: the growth of the line's length. */
export function insertedChars(before: string, after: string): number {
  return Math.max(0, Array.from(after).length - Array.from(before).length);
}

/** One line about the server's acceptance statistics (the `nib.stats` command's answer). */
export function statsSummary(stats: unknown): string {
  const s = (stats ?? {}) as Record<string, unknown>;
  const n = (k: string): number => {
    const v = s[k];
    return typeof v === "number" ? v : 0;
  };
  const accepted = n("accepted");
  const partial = n("accepted_partial");
  const chars = n("accepted_chars");
  const typed = n("typed_chars");
  const share = chars + typed > 0 ? ((100 * chars) / (chars + typed)).toFixed(1) : "0.0";
  const shown = n("shown");
  const rate = shown > 0 ? `, ${((100 * (accepted + partial)) / shown).toFixed(1)}% of ${shown} shown` : "";
  return (
    `nib: ${accepted} suggestions accepted (${partial} in part)${rate}; ` +
    `${chars} characters from nib, ${share}% of the code written`
  );
}
