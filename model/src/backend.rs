//! The accelerator abstraction. A [`Backend`] holds a loaded model; a [`Session`] holds one KV
//! cache and the tokens it covers. The decoding loop ([`crate::generate`]) only talks to these
//! traits, so a device is a configuration choice: a new accelerator is one new implementation here,
//! never `#[cfg]` spread through the pipeline.

use crate::error::{ModelError, Result};
use crate::generate::CancelToken;
use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;
use crate::transformer::{KvCache, Transformer};
use candle_core::Device;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// Which implementation runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// This machine's CPU: nib's own kernels where they apply, candle's elsewhere.
    Cpu,
    /// An NVIDIA GPU through candle's CUDA device (cargo feature `cuda`).
    Cuda,
    /// An Apple GPU through candle's Metal device (cargo feature `metal`).
    Metal,
    /// An inference server ([`crate::remote`]): no weights on this machine, only the tokenizer.
    Remote,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Metal => "metal",
            BackendKind::Remote => "remote",
        }
    }

    /// Whether this build can run the backend (the GPU ones are cargo features).
    pub fn compiled_in(self) -> bool {
        match self {
            BackendKind::Cpu => true,
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::Metal => cfg!(feature = "metal"),
            BackendKind::Remote => true,
        }
    }

    /// The candle device this backend computes on (GPU 0).
    fn device(self) -> Result<Device> {
        let unavailable = |e: candle_core::Error| ModelError::Backend {
            backend: self.name(),
            detail: e.to_string(),
        };
        match self {
            BackendKind::Cpu => Ok(Device::Cpu),
            BackendKind::Cuda if self.compiled_in() => Device::new_cuda(0).map_err(unavailable),
            BackendKind::Metal if self.compiled_in() => Device::new_metal(0).map_err(unavailable),
            BackendKind::Remote => Err(ModelError::Backend {
                backend: "remote",
                detail: "the model runs on an inference server: give its URL (remoteUrl, --remote-url)"
                    .into(),
            }),
            other => Err(ModelError::Backend {
                backend: other.name(),
                detail: format!(
                    "this build of nib has no {0} support; rebuild with `cargo build --release --features {0}`",
                    other.name()
                ),
            }),
        }
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" => Ok(BackendKind::Cuda),
            "metal" => Ok(BackendKind::Metal),
            "remote" => Ok(BackendKind::Remote),
            other => Err(format!(
                "unknown backend `{other}` (available: cpu, cuda, metal, remote)"
            )),
        }
    }
}

/// What a backend can do, for callers that budget prompts and caches.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    pub backend: &'static str,
    pub device: String,
    pub model: String,
    pub context_length: usize,
    /// Whether sessions keep their KV cache between prompts (prefix reuse).
    pub cache_reuse: bool,
    /// Worker threads the backend computes with.
    pub threads: usize,
    /// The kernel path of the quantized matmul: nib's on the CPU (`avx512vnni`, `avxvnni`,
    /// `avx2`, `scalar`), else `candle`.
    pub kernels: &'static str,
    /// Bytes of weights a decoded token reads.
    pub weight_bytes_per_token: u64,
}

pub trait Session: Send {
    /// The tokens whose keys and values are cached, in order.
    fn tokens(&self) -> &[u32];
    /// Forgets every cached position from `n` on.
    fn truncate(&mut self, n: usize) -> Result<()>;
    /// Positions the session can hold at most.
    fn context_length(&self) -> usize;
    /// Appends `tokens` at the end of the cache and returns the logits after the last of them.
    /// A cancelled feed returns `ModelError::Cancelled` and leaves the session as it was.
    fn feed(&mut self, tokens: &[u32], cancel: &CancelToken) -> Result<Vec<f32>> {
        Ok(self.feed_all(tokens, 1, cancel)?.pop().unwrap_or_default())
    }
    /// Like `feed`, but returns the logits after each of the last `n_out` tokens (for checking
    /// a speculative draft in one pass; none for `n_out == 0`, a prefill chunk before the last).
    fn feed_all(
        &mut self,
        tokens: &[u32],
        n_out: usize,
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<f32>>>;
}

pub trait Backend: Send + Sync {
    fn info(&self) -> BackendInfo;
    fn tokenizer(&self) -> &Arc<Tokenizer>;
    fn new_session(&self) -> Box<dyn Session>;
}

/// Opens a GGUF model on the chosen backend.
pub fn load_backend(kind: BackendKind, path: &Path) -> Result<Box<dyn Backend>> {
    Ok(Box::new(CandleBackend::load(kind, path)?))
}

/// Has glibc's allocator keep freed activation buffers for the next layer instead of handing
/// them back to the kernel and faulting fresh zeroed pages in again.
///
/// glibc serves blocks above its `mmap` threshold with `mmap` and returns them with `munmap`,
/// and gives the top of its heap back past its trim threshold; both thresholds start at 128 KiB
/// and only the first adapts. A forward pass over a 512-token prompt frees and allocates
/// buffers of up to 18 MB (the 1.5B's 8,960-wide feed-forward rows) at every layer, and the
/// page faults and zeroing that follow took about 5% of prefill (`perf record`, 2026-12-06).
/// Blocks up to 32 MiB (glibc's most) now come from the heap, and up to 256 MiB of freed heap
/// stays mapped; a block above 32 MiB (a 1,800-token prompt's feed-forward rows) is still
/// mapped for its lifetime. Measured in `docs/ARCHITECTURE.md`. Other allocators and platforms:
/// nothing to do.
fn keep_scratch_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only sets allocator parameters; it is safe to call at any time
            // (glibc takes its arena lock).
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
            }
        });
    }
}

/// The model on a candle device: the CPU (with nib's kernels on its hot paths), a CUDA GPU or a
/// Metal GPU. One transformer serves all three; only where tensors live differs.
pub struct CandleBackend {
    kind: BackendKind,
    model: Arc<Transformer>,
    tokenizer: Arc<Tokenizer>,
    name: String,
}

impl CandleBackend {
    pub fn load(kind: BackendKind, path: &Path) -> Result<Self> {
        let device = kind.device()?;
        let mut g = GgufFile::open(path)?;
        // Check the architecture before the tokenizer, so an unsupported model says so first.
        crate::transformer::Arch::from_name(g.architecture()?)?;
        let tokenizer = Arc::new(Tokenizer::from_gguf(&g)?);
        // The vocabulary's metadata copies are no longer needed: free them before the weights
        // come in, so they do not add to the peak.
        for key in [
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.token_type",
        ] {
            g.content.metadata.remove(key);
        }
        let model = Arc::new(Transformer::load(&mut g, &device)?);
        if kind == BackendKind::Cpu {
            // After the weights, which keep their own mappings.
            keep_scratch_memory();
        }
        Ok(Self {
            kind,
            model,
            tokenizer,
            name: g.model_name(),
        })
    }
}

impl Backend for CandleBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: self.kind.name(),
            device: format!("{:?}", self.model.device().location()),
            model: self.name.clone(),
            context_length: self.model.cfg.context_length,
            cache_reuse: true,
            threads: candle_core::utils::get_num_threads(),
            kernels: self.model.kernels(),
            weight_bytes_per_token: self.model.weight_bytes_per_token(),
        }
    }

    fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    fn new_session(&self) -> Box<dyn Session> {
        Box::new(CandleSession {
            cache: self.model.new_cache(),
            model: self.model.clone(),
            tokens: Vec::new(),
        })
    }
}

struct CandleSession {
    model: Arc<Transformer>,
    cache: KvCache,
    tokens: Vec<u32>,
}

impl Session for CandleSession {
    fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    fn truncate(&mut self, n: usize) -> Result<()> {
        self.cache.truncate(n)?;
        self.tokens.truncate(n);
        Ok(())
    }

    fn context_length(&self) -> usize {
        self.model.cfg.context_length
    }

    fn feed_all(
        &mut self,
        tokens: &[u32],
        n_out: usize,
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<f32>>> {
        if self.tokens.len() + tokens.len() > self.model.cfg.context_length {
            return Err(ModelError::Inference(format!(
                "{} tokens do not fit the model's context of {}",
                self.tokens.len() + tokens.len(),
                self.model.cfg.context_length
            )));
        }
        let logits = self
            .model
            .forward(tokens, &mut self.cache, Some(cancel), n_out)?;
        self.tokens.extend_from_slice(tokens);
        let flat = crate::transformer::logits_vec(&logits)?;
        match n_out.min(tokens.len()) {
            0 => Ok(Vec::new()),
            1 => Ok(vec![flat]), // the per-token case: no second copy of the logits
            n => Ok(flat.chunks(flat.len() / n).map(<[f32]>::to_vec).collect()),
        }
    }
}
