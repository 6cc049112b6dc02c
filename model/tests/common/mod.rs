//! Shared by the integration tests of nib-model.
#![allow(dead_code)]

use std::path::PathBuf;

/// The real default model: `$NIB_MODEL`, else the path `nib model pull` writes. A missing model is
/// a test failure that says how to get it, never a silent skip.
pub fn real_model() -> PathBuf {
    nib_model::fetch::model_from_env().unwrap_or_else(|e| {
        panic!(
            "{e}\nThese tests run the real default model. Fetch it with \
             `cargo run --release -p nib-lsp -- model pull` (or set NIB_MODEL to a GGUF file)."
        )
    })
}

/// A seeded `rows × cols` tensor of draws from N(0, 1) (xorshift and Box–Muller): the same
/// values on every run, so a bound on an error cannot pass on one run and fail on the next.
pub fn normal(seed: u64, rows: usize, cols: usize) -> candle_core::Tensor {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let values: Vec<f32> = (0..rows * cols)
        .map(|_| {
            let u = next().max(f64::MIN_POSITIVE);
            let v = next();
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    candle_core::Tensor::from_vec(values, (rows, cols), &candle_core::Device::Cpu).unwrap()
}

pub fn tiny_model(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    nib_model::tiny::write(&path, &Default::default()).expect("write tiny model");
    path
}

/// Greedy generation from `ids` in a new session of `backend`, not cancelled.
pub fn generate_fresh(
    backend: &dyn nib_model::Backend,
    tok: &nib_model::Tokenizer,
    ids: &[u32],
    params: &nib_model::GenerateParams,
) -> nib_model::Generation {
    let cancel = nib_model::CancelToken::new();
    nib_model::generate(backend.new_session().as_mut(), tok, ids, params, &cancel)
        .expect("generation")
}

/// A plain HTTP server on loopback for the tests' lifetime: `answer` gives each request's
/// status line and body from its path; every response closes its connection. Returns the base
/// URL and the paths asked for, in order.
pub fn http_server(
    answer: impl Fn(&str) -> (&'static str, Vec<u8>) + Send + 'static,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body) = answer(&path);
            log.lock().unwrap().push(path);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    (addr, asked)
}
