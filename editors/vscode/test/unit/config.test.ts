import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { insertedChars, onCrash, resolveServerPath, serverSettings, statsSummary } from "../../src/config";

const exists = (files: string[]) => (f: string) => files.includes(f);

test("server path: the setting wins, and a missing file is an error that names it", () => {
  const r = resolveServerPath("/opt/nib/nib", "/usr/bin", "/ext", exists(["/opt/nib/nib", "/usr/bin/nib"]), "linux");
  assert.deepEqual(r, { path: "/opt/nib/nib", source: "setting" });
  const bad = resolveServerPath("/nope/nib", "/usr/bin", "/ext", exists(["/usr/bin/nib"]), "linux");
  assert.ok("error" in bad && bad.error.includes("/nope/nib"));
});

test("server path: PATH in order, then the bundled binary, then a clear error", () => {
  const env = "/a::/b:/c";
  assert.deepEqual(resolveServerPath(null, env, "/ext", exists(["/b/nib", "/c/nib"]), "linux"), {
    path: "/b/nib",
    source: "PATH",
  });
  assert.deepEqual(resolveServerPath("  ", env, "/ext", exists(["/ext/bin/nib"]), "linux"), {
    path: "/ext/bin/nib",
    source: "bundled",
  });
  const none = resolveServerPath(undefined, undefined, "/ext", exists([]), "linux");
  assert.ok("error" in none && none.error.includes("nib.serverPath"));
  assert.deepEqual(resolveServerPath(null, "C:\\bin", "C:\\ext", exists([path.join("C:\\bin", "nib.exe")]), "win32"), {
    path: path.join("C:\\bin", "nib.exe"),
    source: "PATH",
  });
});

test("settings sent to the server leave out the client-only ones", () => {
  assert.deepEqual(serverSettings({ serverPath: "/x", maxTokens: 2, model: null, languages: { go: false } }), {
    maxTokens: 2,
    model: null,
    languages: { go: false },
  });
});

test("every contributed setting but serverPath is one the server reads, with a description", () => {
  // The server's own list is checked against this file by a Rust test (settings.rs); here the
  // manifest is checked for what VS Code shows: each setting documented, under `nib.`.
  const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, "../../../package.json"), "utf8")) as {
    contributes: { configuration: { properties: Record<string, { description?: string; markdownDescription?: string }> } };
  };
  const props = manifest.contributes.configuration.properties;
  assert.ok(Object.keys(props).length >= 15);
  for (const [key, p] of Object.entries(props)) {
    assert.match(key, /^nib\.[a-z][A-Za-z]*$/);
    assert.ok((p.description ?? p.markdownDescription ?? "").length > 10, `${key} has no description`);
  }
});

test("a crashing server is restarted until it crashed 5 times in 3 minutes", () => {
  let crashes: number[] = [];
  const decisions: boolean[] = [];
  for (let i = 0; i < 6; i++) {
    const next = onCrash(crashes, 1000 * i);
    crashes = next.crashes;
    decisions.push(next.restart);
  }
  assert.deepEqual(decisions, [true, true, true, true, true, false]);
  // Old crashes age out of the window.
  assert.equal(onCrash(crashes, 10 * 60_000).restart, true);
  assert.equal(onCrash(crashes, 10 * 60_000).crashes.length, 1);
});

test("partial accepts count the characters the line grew by", () => {
  assert.equal(insertedChars("let x = ", "let x = foo("), 4);
  assert.equal(insertedChars("é", "éé→"), 2);
  assert.equal(insertedChars("abc", "ab"), 0);
});

test("stats summary reads the server's counters and tolerates missing ones", () => {
  const s = statsSummary({ shown: 10, accepted: 3, accepted_partial: 1, accepted_chars: 90, typed_chars: 210 });
  assert.equal(s, "nib: 3 suggestions accepted (1 in part), 40.0% of 10 shown; 90 characters from nib, 30.0% of the code written");
  assert.match(statsSummary(null), /0 suggestions accepted/);
});
