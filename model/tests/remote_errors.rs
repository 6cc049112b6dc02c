//! The remote backend against servers that misbehave: down, silent, stalled mid-stream, or
//! answering garbage. Each must give a clear error within the timeout, and nothing may hang.
//! (The protocols themselves are tested against a real llama.cpp server in
//! `lsp/tests/remote.rs`.)

use nib_model::remote::{complete, RemoteConfig, RemoteRequest};
use nib_model::{CancelToken, ModelError};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(1500);

/// A one-connection server on loopback that reads the request and answers `reply` (or nothing),
/// then holds the connection open for `hold`.
fn fake(reply: &'static [u8], hold: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 65536];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
            let _ = s.flush();
            std::thread::sleep(hold);
        }
    });
    format!("http://{addr}")
}

fn request() -> RemoteRequest<'static> {
    RemoteRequest {
        prompt: &[151659, 8822, 1887, 368, 314, 151661, 92, 151660],
        prefix: "fn main() {",
        suffix: "}",
        files: &[],
        max_tokens: 16,
        single_line: false,
        stop_check: None,
        stop_text: vec![],
    }
}

fn ask(url: &str) -> (Result<String, ModelError>, Duration) {
    let cfg = RemoteConfig::new(url, None, None, TIMEOUT).unwrap();
    let t0 = Instant::now();
    let r = complete(&cfg, &request(), &CancelToken::new()).map(|g| g.text);
    (r, t0.elapsed())
}

fn expect_error(url: &str, needle: &str) {
    let (r, took) = ask(url);
    let err = r
        .expect_err("a misbehaving server must give an error")
        .to_string();
    eprintln!("{took:?}: {err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(
        err.contains("127.0.0.1"),
        "the error names the server: {err}"
    );
    assert!(took < TIMEOUT + Duration::from_millis(500), "took {took:?}");
}

#[test]
fn a_server_that_is_down() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    expect_error(
        &format!("http://127.0.0.1:{port}"),
        "cannot reach the server",
    );
}

#[test]
fn a_server_that_never_answers() {
    expect_error(&fake(b"", Duration::from_secs(10)), "within 1500 ms");
}

#[test]
fn a_stream_that_stalls() {
    let reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {\"content\":\"let x\",\"stop\":false}\n\n";
    expect_error(&fake(reply, Duration::from_secs(10)), "within 1500 ms");
}

#[test]
fn a_stream_of_garbage() {
    let reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {nonsense\n\n";
    expect_error(&fake(reply, Duration::from_secs(10)), "bad JSON");
}

#[test]
fn an_answer_that_is_not_json() {
    let reply =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>";
    expect_error(&fake(reply, Duration::from_secs(10)), "not JSON");
}

#[test]
fn an_http_error() {
    let reply = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"error\":\"invalid api key\"}";
    expect_error(&fake(reply, Duration::from_secs(10)), "API key");
}

#[test]
fn a_cancel_returns_at_once() {
    let url = fake(b"", Duration::from_secs(10));
    let cfg = RemoteConfig::new(&url, None, None, Duration::from_secs(30)).unwrap();
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        c2.cancel();
    });
    let t0 = Instant::now();
    let r = complete(&cfg, &request(), &cancel);
    assert!(matches!(r, Err(ModelError::Cancelled)), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(600),
        "{:?}",
        t0.elapsed()
    );
}
