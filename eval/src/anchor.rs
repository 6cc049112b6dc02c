//! Who answers a benchmark's tasks: nib (the model on this machine, through the completion
//! pipeline an editor gets) or the anchor, llama.cpp's own server on the same model file.
//!
//! The anchor answers through llama.cpp's `/infill`: nib's windowing cuts the prefix, suffix and
//! other files exactly as for nib (the same [`Completer::plan`]), then llama.cpp lays out its own
//! prompt, generates greedily and stops at its end-of-generation token. A one-line task stops at
//! the end of the first line, as nib's does. By default nothing of nib's post-processing or block
//! limit is applied, so what is scored is what a llama.cpp user gets; with `rules` the anchor's
//! text goes through the same block limit (while it streams) and post-processing as nib's own,
//! which leaves the prompt and the engine as the only differences (the fair figure for
//! multi-line tasks, where llama.cpp's raw text runs on past the block's end). An
//! OpenAI-compatible URL instead sends nib's exact prompt tokens, which leaves only the engines'
//! arithmetic to differ.

use nib_lsp::{Completer, CompletionRequest};
use nib_model::remote::{self, RemoteConfig, RemoteRequest};
use nib_model::CancelToken;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a benchmark needs of an answer.
pub struct Answer {
    pub text: String,
    pub prompt_tokens: usize,
}

pub enum Answerer {
    Nib(Completer),
    Anchor {
        /// Windows the task as nib would (its runner is the server, but only `plan` is used).
        planner: Completer,
        config: RemoteConfig,
        /// nib's block limit and post-processing apply to the anchor's text too.
        rules: bool,
        /// Kept alive while the answers come; dropped, it stops the server.
        _server: Option<LlamaServer>,
    },
}

impl Answerer {
    pub fn answer(&mut self, req: &CompletionRequest) -> anyhow::Result<Answer> {
        match self {
            Answerer::Nib(c) => {
                let c = c.complete(req, &CancelToken::new())?;
                Ok(Answer {
                    text: c.text,
                    prompt_tokens: c.prompt_tokens,
                })
            }
            Answerer::Anchor {
                planner,
                rules: true,
                ..
            } => {
                // The planner's runner is the server: its `complete` is nib's pipeline around
                // llama.cpp's text.
                let c = planner.complete(req, &CancelToken::new())?;
                Ok(Answer {
                    text: c.text,
                    prompt_tokens: c.prompt_tokens,
                })
            }
            Answerer::Anchor {
                planner, config, ..
            } => {
                let plan = planner.plan(req);
                // A remote planner writes no middle: the prefix is all the text before the
                // cursor.
                debug_assert!(plan.parts.middle.is_empty());
                let r = remote::complete(
                    config,
                    &RemoteRequest {
                        prompt: &plan.ids,
                        prefix: &plan.parts.server_prefix(),
                        suffix: &plan.parts.server_suffix(),
                        files: &plan.parts.files,
                        max_tokens: plan.max_tokens,
                        single_line: !plan.multiline,
                        stop_check: None,
                        stop_text: planner.stop_text(),
                    },
                    &CancelToken::new(),
                )?;
                Ok(Answer {
                    text: r.text,
                    prompt_tokens: plan.ids.len(),
                })
            }
        }
    }
}

/// Which endpoint of a started llama-server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Endpoint {
    /// `/infill`: llama.cpp lays out its own prompt from nib's windows.
    Infill,
    /// `/v1/completions` with nib's exact prompt tokens: only the engines' arithmetic differs.
    Completions,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Infill => "/infill",
            Endpoint::Completions => "/v1/completions",
        }
    }
}

/// A `llama-server` on loopback serving `model`, stopped when dropped.
pub struct LlamaServer {
    child: Child,
    pub base: String,
}

impl LlamaServer {
    /// Starts `binary` on a free port with the model (2 threads, one slot, an 8,192-token
    /// context, greedy answers asked per request) and waits until it is healthy.
    pub fn start(binary: &Path, model: &Path) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut cmd = Command::new(binary);
        // The server goes when nib-eval goes, even when it is killed (Ctrl-C, a signal) and
        // `Drop` does not run.
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: `prctl` is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let child = cmd
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("-m")
            .arg(model)
            .args(["-c", "8192", "-np", "1", "-t", &threads.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start {}: {e} (scripts/get-llama-server.sh builds it)",
                    binary.display()
                )
            })?;
        let mut server = LlamaServer {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let t0 = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("{} exited at start ({status})", binary.display());
            }
            let healthy = ureq::get(&format!("{}/health", server.base))
                .timeout(Duration::from_secs(2))
                .call()
                .is_ok();
            if healthy {
                return Ok(server);
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(180),
                "{} did not become healthy in 180 s",
                binary.display()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn url(&self, endpoint: Endpoint) -> String {
        format!("{}{}", self.base, endpoint.path())
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `scripts/get-llama-server.sh` puts the server.
pub fn default_llama_server() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("nib/llama-server/bin/llama-server")
}
