//! A minimal LSP client over a spawned `nib serve`: framed JSON-RPC on stdin/stdout, a reader
//! thread that timestamps what arrives, and waits with timeouts so a broken server fails a test
//! or a benchmark instead of hanging it. Used by the protocol tests and by `nib-eval replay`.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub struct LspClient {
    pub child: Child,
    stdin: Option<ChildStdin>,
    incoming: Receiver<(Instant, Value)>,
    /// When each message in `backlog` arrived.
    arrived: Vec<Instant>,
    /// Messages read but not yet asked for.
    backlog: Vec<Value>,
    next_id: i64,
}

impl LspClient {
    /// Starts `nib serve ARGS` from the binary at `nib`.
    pub fn spawn(nib: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_with_stderr(nib, args, env, Stdio::inherit())
    }

    /// [`spawn`](Self::spawn) with the server's stderr (its log, `NIB_TRACE`'s lines) sent
    /// where the caller says, e.g. a file to read afterwards.
    pub fn spawn_with_stderr(
        nib: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Self {
        let mut cmd = Command::new(nib);
        cmd.arg("serve")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start nib serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut len = None;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        len = v.parse::<usize>().ok();
                    }
                }
                let mut body = vec![0; len.expect("Content-Length header")];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                let v: Value = serde_json::from_slice(&body).expect("server sent JSON");
                if tx.send((Instant::now(), v)).is_err() {
                    return;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            incoming: rx,
            arrived: Vec::new(),
            backlog: Vec::new(),
            next_id: 1,
        }
    }

    pub fn send_raw(&mut self, body: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let _ = write!(stdin, "Content-Length: {}\r\n\r\n", body.len());
        let _ = stdin.write_all(body);
        let _ = stdin.flush();
    }

    /// Bytes as they are, with no frame around them (for framing tests).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let _ = stdin.write_all(bytes);
        let _ = stdin.flush();
    }

    pub fn send(&mut self, v: &Value) {
        self.send_raw(v.to_string().as_bytes());
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    pub fn request(&mut self, method: &str, params: Value) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        id
    }

    /// The first message (read now or earlier) that `pred` accepts.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_timed(what, timeout, pred).1
    }

    /// Like `wait_for`, with the time the message arrived.
    pub fn wait_for_timed(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> (Instant, Value) {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return (self.arrived.remove(i), self.backlog.remove(i));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok((at, v)) if pred(&v) => {
                    self.answer_server_request(&v);
                    return (at, v);
                }
                Ok((at, v)) => {
                    self.answer_server_request(&v);
                    self.arrived.push(at);
                    self.backlog.push(v)
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out after {timeout:?} waiting for {what}; seen: {:#?}",
                    self.backlog
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "server closed its output while waiting for {what}; seen: {:#?}",
                    self.backlog
                ),
            }
        }
    }

    /// Messages that arrived so far without waiting, with their arrival times.
    pub fn drain(&mut self) -> Vec<(Instant, Value)> {
        let mut out: Vec<(Instant, Value)> =
            self.arrived.drain(..).zip(self.backlog.drain(..)).collect();
        while let Ok((at, v)) = self.incoming.try_recv() {
            self.answer_server_request(&v);
            out.push((at, v));
        }
        out
    }

    /// Answers the server's own requests (progress tokens) so it never waits on us.
    fn answer_server_request(&mut self, v: &Value) {
        if v.get("id").is_some() && v.get("method").is_some() {
            let id = v["id"].clone();
            self.send(&json!({"jsonrpc": "2.0", "id": id, "result": null}));
        }
    }

    pub fn response(&mut self, id: i64, timeout: Duration) -> Value {
        self.wait_for(&format!("the response to request {id}"), timeout, |v| {
            v.get("id") == Some(&json!(id)) && v.get("method").is_none()
        })
    }

    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.request(method, params);
        self.response(id, Duration::from_secs(60))
    }

    pub fn initialize(&mut self, init_options: Value, root: &str) -> Value {
        self.initialize_with(json!({
            "processId": null,
            "rootUri": format!("file://{root}"),
            "capabilities": {"general": {"positionEncodings": ["utf-16"]}, "window": {"workDoneProgress": true}},
            "initializationOptions": init_options,
        }))
    }

    /// `initialize` with the caller's params (workspace folders, capabilities), then
    /// `initialized`.
    pub fn initialize_with(&mut self, params: Value) -> Value {
        let r = self.call("initialize", params);
        self.notify("initialized", json!({}));
        r
    }

    /// Waits for `nib/status` with the given state.
    pub fn status(&mut self, state: &str, timeout: Duration) -> Value {
        self.wait_for(&format!("nib/status {state}"), timeout, |v| {
            v["method"] == "nib/status" && v["params"]["state"] == state
        })
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Resident memory of the server process, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("the server did not exit within {timeout:?}");
    }
}

impl Drop for LspClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The items of an inline completion response (empty for none).
pub fn inline_items(resp: &Value) -> Vec<String> {
    let result = &resp["result"];
    let items = result.get("items").unwrap_or(result);
    items
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["insertText"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
