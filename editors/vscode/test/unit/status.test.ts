import { test } from "node:test";
import * as assert from "node:assert/strict";
import { StatusModel } from "../../src/status";

// Each case: events applied in order, then the label the status bar must show.
type Event = [string, unknown?];
const cases: { name: string; events: Event[]; label: string; error?: boolean; text?: string }[] = [
  { name: "fresh", events: [], label: "nib: starting" },
  { name: "model loading", events: [["running"], ["status", { state: "loading", message: "loading m.gguf" }]], label: "nib: loading (loading m.gguf)" },
  {
    name: "ready",
    events: [["running"], ["status", { state: "ready", message: "qwen on cpu" }]],
    label: "nib: ready (qwen on cpu)",
  },
  {
    name: "indexing shows progress",
    events: [["running"], ["status", { state: "ready", message: "m" }], ["index", { state: "indexing", done: 25, total: 100 }]],
    label: "nib: indexing (25/100 files)",
    text: "$(sync~spin) nib 25%",
  },
  {
    name: "indexed",
    events: [
      ["running"],
      ["status", { state: "ready", message: "m" }],
      ["index", { state: "indexing", done: 1, total: 2 }],
      ["index", { state: "done", done: 2, total: 2, files: 2, symbols: 7, seconds: 0.1 }],
    ],
    label: "nib: ready (m; indexed 2 files, 7 symbols)",
    text: "$(check) nib",
  },
  { name: "model missing", events: [["running"], ["status", { state: "error", message: "no model" }]], label: "nib: error (no model)", error: true },
  {
    name: "crash while ready, restarting",
    events: [["running"], ["status", { state: "ready", message: "m" }], ["exit", true]],
    label: "nib: error (the server died; restarting)",
    error: true,
  },
  { name: "crash, given up", events: [["running"], ["exit", false]], label: "nib: error (the server died)", error: true },
  {
    name: "restarted after a crash",
    events: [["running"], ["exit", true], ["starting"], ["running"], ["status", { state: "ready", message: "m" }]],
    label: "nib: ready (m)",
  },
  {
    name: "the error stays on show while the restarted server loads",
    events: [["running"], ["exit", true], ["starting"], ["running"]],
    label: "nib: error (the server died; restarting)",
    error: true,
  },
  {
    name: "restarted server loading its model",
    events: [["running"], ["exit", true], ["starting"], ["running"], ["status", { state: "loading", message: "m" }]],
    label: "nib: error (the server died; restarting)",
    error: true,
  },
  { name: "disabled", events: [["running"], ["status", { state: "ready", message: "m" }], ["enabled", false]], label: "nib: disabled (completions are off (nib: Toggle completions))" },
  { name: "garbage notifications are ignored", events: [["running"], ["status", 42], ["index", { state: "?" }], ["index", null]], label: "nib: loading (loading the model)" },
  { name: "start failed", events: [["startFailed", "nib not found"]], label: "nib: error (nib not found)", error: true },
];

for (const c of cases) {
  test(`status: ${c.name}`, () => {
    const m = new StatusModel();
    for (const [kind, arg] of c.events) {
      switch (kind) {
        case "running":
          m.onRunning();
          break;
        case "starting":
          m.onStarting();
          break;
        case "status":
          m.onServerStatus(arg);
          break;
        case "index":
          m.onIndex(arg);
          break;
        case "exit":
          m.onExit("the server died", arg as boolean);
          break;
        case "enabled":
          m.enabled = arg as boolean;
          break;
        case "startFailed":
          m.onStartFailed(arg as string);
          break;
        default:
          assert.fail(`unknown event ${kind}`);
      }
    }
    const v = m.view();
    assert.equal(v.label, c.label);
    assert.equal(v.error, c.error ?? false);
    if (c.text !== undefined) {
      assert.equal(v.text, c.text);
    }
    assert.ok(v.tooltip.startsWith(c.label.split(" (")[0]));
  });
}
