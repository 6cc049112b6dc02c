// nib's VS Code extension in a real VS Code (code-server) in a real browser (Debian's Chromium,
// driven headless by playwright-core): install the .vsix, open a workspace, type, wait for nib's
// ghost text, press Tab, save; then kill the server and watch the extension show the error and
// bring it back. Everything it needs comes from the environment (set by lsp/tests/vscode.rs):
//
//   NIB_E2E_CODE_SERVER  the code-server launcher      NIB_E2E_VSIX   the packaged extension
//   NIB_E2E_NIB          the nib binary                NIB_E2E_MODEL  the GGUF model
//   NIB_E2E_ROOT         the workspace folder          NIB_E2E_FILE   file to edit, relative to it
//   NIB_E2E_LINE         1-based line to type at       NIB_E2E_TYPE   the text to type there
//   NIB_E2E_OUT          the JSON report to write      NIB_E2E_ARTIFACTS  screenshots and logs
//   NIB_E2E_OTHER        a file to open first (optional)
//   NIB_E2E_CHROMIUM     the browser (default /usr/bin/chromium)
//
// The report says what happened step by step; a screenshot is kept on failure.

import { chromium } from "playwright-core";
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

function need(name) {
  const v = process.env[name];
  if (v === undefined || v === "") {
    throw new Error(`set ${name} (lsp/tests/vscode.rs sets every NIB_E2E_* variable)`);
  }
  return v;
}

const cfg = {
  codeServer: need("NIB_E2E_CODE_SERVER"),
  vsix: need("NIB_E2E_VSIX"),
  nib: need("NIB_E2E_NIB"),
  model: need("NIB_E2E_MODEL"),
  root: need("NIB_E2E_ROOT"),
  file: need("NIB_E2E_FILE"),
  line: Number(need("NIB_E2E_LINE")),
  type: need("NIB_E2E_TYPE"),
  out: need("NIB_E2E_OUT"),
  artifacts: need("NIB_E2E_ARTIFACTS"),
  other: process.env.NIB_E2E_OTHER || "",
  chromium: process.env.NIB_E2E_CHROMIUM || "/usr/bin/chromium",
};

const t0 = Date.now();
const report = { ok: false, steps: [] };
const step = (what, extra = {}) => {
  const s = { at_ms: Date.now() - t0, what, ...extra };
  report.steps.push(s);
  console.error(`[e2e ${(s.at_ms / 1000).toFixed(1)}s] ${what}${Object.keys(extra).length ? " " + JSON.stringify(extra) : ""}`);
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, timeoutMs, probe) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) {
      return v;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    }
    await sleep(100);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

/** Processes running `nib serve` from the binary under test. */
function serverPids() {
  const out = execFileSync("ps", ["-eo", "pid=,args="], { encoding: "utf8" });
  return out
    .split("\n")
    .map((l) => l.trim().match(/^(\d+)\s+(.*)$/))
    .filter((m) => m && m[2].startsWith(cfg.nib) && m[2].includes(" serve"))
    .map((m) => Number(m[1]));
}

fs.mkdirSync(cfg.artifacts, { recursive: true });
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "nib-vscode-"));
const userData = path.join(scratch, "user-data");
const extensions = path.join(scratch, "extensions");
fs.mkdirSync(path.join(userData, "User"), { recursive: true });
fs.writeFileSync(
  path.join(userData, "User", "settings.json"),
  JSON.stringify(
    {
      "nib.serverPath": cfg.nib,
      "nib.model": cfg.model,
      "workbench.startupEditor": "none",
      "workbench.tips.enabled": false,
      "workbench.welcomePage.walkthroughs.openOnInstall": false,
      "security.workspace.trust.enabled": false,
      "telemetry.telemetryLevel": "off",
      "extensions.autoUpdate": false,
      "extensions.autoCheckUpdates": false,
      "editor.inlineSuggest.enabled": true,
      // The suggest widget would take Tab from the ghost text.
      "editor.quickSuggestions": { other: false, comments: false, strings: false },
      "editor.suggestOnTriggerCharacters": false,
      "editor.wordBasedSuggestions": "off",
      "files.autoSave": "off",
      "chat.disableAIFeatures": true,
      "workbench.secondarySideBar.defaultVisibility": "hidden",
    },
    null,
    2,
  ),
);

let codeServer;
let browser;
let page;
const file = path.join(cfg.root, cfg.file);
try {
  const installed = execFileSync(
    cfg.codeServer,
    ["--user-data-dir", userData, "--extensions-dir", extensions, "--install-extension", cfg.vsix],
    { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
  );
  step("installed the extension", { output: installed.trim().split("\n").pop() });

  const port = await freePort();
  const log = fs.openSync(path.join(cfg.artifacts, "code-server.log"), "w");
  codeServer = spawn(
    cfg.codeServer,
    [
      "--auth", "none",
      "--bind-addr", `127.0.0.1:${port}`,
      "--user-data-dir", userData,
      "--extensions-dir", extensions,
      "--disable-telemetry",
      "--disable-update-check",
      "--disable-workspace-trust",
      "--disable-getting-started-override",
      cfg.root,
    ],
    { stdio: ["ignore", log, log], detached: true, env: { ...process.env } },
  );
  const url = `http://127.0.0.1:${port}/?folder=${encodeURIComponent(cfg.root)}`;
  await waitFor("code-server to listen", 60_000, async () => {
    try {
      return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
    } catch {
      return false;
    }
  });
  step("code-server is up", { port });

  browser = await chromium.launch({
    executablePath: cfg.chromium,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 760 } });
  await page.goto(url);
  await page.waitForSelector(".monaco-workbench", { timeout: 60_000 });
  step("the workbench loaded");

  // Every label the status bar item shows, in order, sampled every 50 ms inside the page.
  await page.evaluate(() => {
    const w = window;
    w.nibHistory = [];
    setInterval(() => {
      const el = document.querySelector('.statusbar [aria-label^="nib: "]');
      const label = el ? el.getAttribute("aria-label") : null;
      if (label && w.nibHistory[w.nibHistory.length - 1] !== label) {
        w.nibHistory.push(label);
      }
    }, 50);
  });
  const history = () => page.evaluate(() => window.nibHistory);
  const readyAfter = async (from, timeoutMs) =>
    waitFor("the status bar to say ready", timeoutMs, async () => {
      const h = await history();
      return h.slice(from).some((l) => l.startsWith("nib: ready"));
    });

  await readyAfter(0, 120_000);
  step("status bar: ready", { history: await history() });

  // Open the files with Quick Open, then go to the line.
  const open = async (rel) => {
    await page.keyboard.press("Control+P");
    await page.waitForSelector(".quick-input-widget input", { state: "visible" });
    await page.keyboard.type(rel);
    await page.waitForSelector(".quick-input-list .monaco-list-row", { state: "visible" });
    await sleep(300);
    await page.keyboard.press("Enter");
    await page.waitForSelector(`.tab.active[data-resource-name="${path.basename(rel)}"]`, { timeout: 30_000 });
    await page.waitForSelector(".monaco-editor.focused", { timeout: 30_000 });
  };
  if (cfg.other !== "") {
    await open(cfg.other);
    step("opened the other file", { file: cfg.other });
  }
  await open(cfg.file);
  await page.keyboard.press("Control+G");
  await page.waitForSelector(".quick-input-widget input", { state: "visible" });
  await page.keyboard.type(String(cfg.line));
  await page.keyboard.press("Enter");
  await page.keyboard.press("End");
  step("opened the file", { file: cfg.file, line: cfg.line });

  const ghost = ".monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text";
  await page.keyboard.type(cfg.type, { delay: 80 });
  step("typed", { text: cfg.type });
  await page.waitForSelector(ghost, { state: "visible", timeout: 120_000 });
  await sleep(200);
  const shown = await page.$$eval(ghost, (els) => els.map((e) => e.textContent).join("\n"));
  step("ghost text shown", { text: shown });
  await page.screenshot({ path: path.join(cfg.artifacts, "ghost-text.png") });

  const before = fs.readFileSync(file, "utf8");
  await page.keyboard.press("Tab");
  await sleep(300);
  await page.keyboard.press("Control+S");
  const saved = await waitFor("the file to be saved", 20_000, async () => {
    const now = fs.readFileSync(file, "utf8");
    return now !== before ? now : null;
  });
  report.saved = saved;
  step("accepted with Tab and saved");

  // The server dies: the status bar must show the error, and the extension must restart it.
  const pids = serverPids();
  if (pids.length !== 1) {
    throw new Error(`expected one running nib server, found ${JSON.stringify(pids)}`);
  }
  const mark = (await history()).length;
  process.kill(pids[0], "SIGKILL");
  step("killed the server", { pid: pids[0] });
  await waitFor("the status bar to show the error", 30_000, async () =>
    (await history()).slice(mark).some((l) => l.startsWith("nib: error")),
  );
  step("status bar: error", { history: (await history()).slice(mark) });
  await page.screenshot({ path: path.join(cfg.artifacts, "server-died.png") });
  await readyAfter(mark, 120_000);
  const restarted = serverPids();
  step("status bar: ready again", { history: (await history()).slice(mark), pids: restarted });
  if (restarted.length !== 1 || restarted[0] === pids[0]) {
    throw new Error(`expected one new nib server, found ${JSON.stringify(restarted)}`);
  }
  report.status_after_crash = (await history()).slice(mark);

  // The restarted server completes too.
  await page.keyboard.press("End");
  await page.keyboard.press("Enter");
  await page.keyboard.type("let longest = ", { delay: 80 });
  await page.waitForSelector(ghost, { state: "visible", timeout: 120_000 });
  report.after_restart = await page.$$eval(ghost, (els) => els.map((e) => e.textContent).join("\n"));
  step("ghost text after the restart", { text: report.after_restart });
  report.ok = true;
} catch (e) {
  report.error = e instanceof Error ? e.message : String(e);
  step("failed", { error: report.error });
  if (page) {
    await page.screenshot({ path: path.join(cfg.artifacts, "failure.png") }).catch(() => undefined);
  }
} finally {
  await browser?.close().catch(() => undefined);
  if (codeServer?.pid) {
    try {
      process.kill(-codeServer.pid, "SIGTERM");
    } catch {
      // already gone
    }
  }
  for (const pid of serverPids()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  fs.rmSync(scratch, { recursive: true, force: true });
  fs.writeFileSync(cfg.out, JSON.stringify(report, null, 2));
}
process.exit(report.ok ? 0 : 1);
