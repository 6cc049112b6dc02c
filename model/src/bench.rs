//! Engine throughput and latency on one backend, as `nib bench` reports them.
//!
//! The prompt is a fill-in-the-middle prompt over real source text (nib's own), of a chosen size:
//! prefix, then a short suffix, as the server lays them out. Measured: prefill and decode
//! throughput, time to the first token cold, and after typing one more character into the prefix
//! with the session's cache reused.

use crate::backend::Backend;
use crate::error::{ModelError, Result};
use crate::generate::{generate, generate_with_draft, CancelToken, GenerateParams};
use crate::prompt::{self, FimTokens, PromptParts};

/// Source text the bench prompts are cut from.
const CORPUS: &[&str] = &[
    include_str!("transformer.rs"),
    include_str!("tokenizer.rs"),
    include_str!("generate.rs"),
    include_str!("kernels.rs"),
    include_str!("fetch.rs"),
    include_str!("gguf.rs"),
];

#[derive(Debug, Clone)]
pub struct BenchParams {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// Tokens of the prompt that are suffix (after the cursor).
    pub suffix_tokens: usize,
    /// Speculation, draft tokens at most (0: off): from a draft model when [`run`] is given one,
    /// else by prompt lookup.
    pub draft_len: usize,
    /// Prompt tokens per forward pass while prefilling (as `GenerateParams::prefill_chunk`).
    pub prefill_chunk: usize,
}

impl Default for BenchParams {
    fn default() -> Self {
        Self {
            prompt_tokens: 512,
            gen_tokens: 128,
            suffix_tokens: 64,
            draft_len: 0,
            prefill_chunk: 128,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub ttft_cold_ms: f64,
    pub ttft_reuse_ms: f64,
    /// Prompt tokens whose cache entries the one-character edit reused.
    pub reused_tokens: usize,
    /// Speculation: draft tokens proposed and kept.
    pub drafted: usize,
    pub accepted: usize,
    pub peak_rss_mb: Option<f64>,
    /// The kernel path of the quantized matmul (see `BackendInfo::kernels`).
    pub kernels: &'static str,
    /// This machine's memory read bandwidth, measured with the backend's threads.
    pub mem_read_gb_s: f64,
    /// Weights a decoded token reads, and the decode speed that bandwidth allows at most.
    pub weight_mb_per_token: f64,
    pub decode_bound_tok_s: f64,
    /// `decode_tok_s / decode_bound_tok_s`: how near decode runs to the memory's limit.
    pub decode_share_of_bound: f64,
}

/// Text of `n` tokens cut from the corpus, at a token boundary.
fn text_of(tok: &crate::Tokenizer, n: usize, skip_chars: usize) -> String {
    let mut corpus = String::new();
    while corpus.len() < skip_chars + n * 8 {
        for part in CORPUS {
            corpus.push_str(part);
        }
    }
    let ids = tok.encode(&corpus[skip_chars..]);
    tok.decode(&ids[..n.min(ids.len())])
}

pub fn run(
    backend: &dyn Backend,
    draft: Option<&dyn Backend>,
    p: &BenchParams,
) -> Result<BenchReport> {
    let tok = backend.tokenizer().clone();
    let fim = FimTokens::detect(&tok).ok_or(ModelError::NoFim)?;
    let suffix_tokens = p.suffix_tokens.min(p.prompt_tokens / 4);
    let prefix_tokens = p.prompt_tokens.saturating_sub(suffix_tokens + 3).max(1);
    let prefix = text_of(&tok, prefix_tokens, 0);
    let suffix = text_of(&tok, suffix_tokens, 20_000);
    let parts = |prefix: &str| PromptParts {
        prefix: prefix.to_string(),
        suffix: suffix.clone(),
        ..Default::default()
    };
    let ids = prompt::build(&tok, &fim, &parts(&prefix));
    // Always decode the full count: no stop tokens, specials banned.
    let mut params = GenerateParams::new(&tok, Vec::new(), p.gen_tokens.max(1), false);
    params.banned = tok.special_ids().to_vec();
    params.draft_len = p.draft_len;
    params.prefill_chunk = p.prefill_chunk.max(1);
    let cancel = CancelToken::new();

    let mut session = backend.new_session();
    let mut draft_session = draft.map(|d| d.new_session());
    let cold = generate_with_draft(
        session.as_mut(),
        draft_session
            .as_mut()
            .map(|s| s.as_mut() as &mut dyn crate::Session),
        &tok,
        &ids,
        &params,
        &cancel,
    )?;

    // One more character typed at the cursor, same session.
    let edited = prompt::build(&tok, &fim, &parts(&format!("{prefix}x")));
    params.max_tokens = 1;
    let reuse = generate(session.as_mut(), &tok, &edited, &params, &cancel)?;

    let decoded = cold.tokens.len().saturating_sub(1).max(1);
    let decode_tok_s = decoded as f64 / (cold.decode_ms / 1e3);
    let info = backend.info();
    // Before the bandwidth test, whose buffer would count.
    let peak_rss_mb = peak_rss_mb();
    let mem_read_gb_s = memory_read_gb_s();
    let bytes = info.weight_bytes_per_token as f64;
    let decode_bound_tok_s = mem_read_gb_s * 1e9 / bytes.max(1.0);
    Ok(BenchReport {
        prompt_tokens: ids.len(),
        gen_tokens: cold.tokens.len(),
        prefill_tok_s: ids.len() as f64 / (cold.prefill_ms / 1e3),
        decode_tok_s,
        ttft_cold_ms: cold.prefill_ms,
        ttft_reuse_ms: reuse.prefill_ms,
        reused_tokens: reuse.reused_tokens,
        drafted: cold.drafted,
        accepted: cold.accepted,
        peak_rss_mb,
        kernels: info.kernels,
        mem_read_gb_s,
        weight_mb_per_token: bytes / 1e6,
        decode_bound_tok_s,
        decode_share_of_bound: decode_tok_s / decode_bound_tok_s,
    })
}

/// Memory read bandwidth in GB/s: the best of 5 passes over 512 MiB (beyond any core's own
/// caches; a large shared L3 may hold part of it: 480 MiB on the Intel Xeon VM this was tuned
/// on), split across candle's worker threads as the kernels split their work, asking for the bytes
/// `kernels::PREFETCH_BYTES` ahead as the decoding kernels do (measured without them, the 0.5B's decode read weights at
/// 116% of this "bound" in one run on an Intel Xeon, 2026-12-06).
pub fn memory_read_gb_s() -> f64 {
    let words: usize = 64 << 20; // 512 MiB of u64
    let buf: Vec<u64> = (0..words as u64).collect();
    let tasks = candle_core::utils::get_num_threads().max(1) * 4;
    let per = words.div_ceil(tasks);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let sums: Vec<std::sync::atomic::AtomicU64> = (0..tasks)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect();
        let t = std::time::Instant::now();
        crate::kernels::par_grabs(
            tasks,
            1,
            || (),
            |_, ts| {
                for i in ts {
                    let part = &buf[(i * per).min(words)..((i + 1) * per).min(words)];
                    // Eight independent sums, so the loop is bound by loads alone; on x86 with the
                    // same hints ahead that the decoding kernels give (`kernels::avx2`), which
                    // raise what one core can stream.
                    let mut acc = [0u64; 8];
                    for c in part.chunks_exact(8) {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: a prefetch (SSE, in every x86-64) reads nothing the program sees
                        // and cannot fault, wherever it points.
                        unsafe {
                            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
                            let ahead =
                                c.as_ptr().wrapping_byte_add(crate::kernels::PREFETCH_BYTES);
                            _mm_prefetch::<_MM_HINT_T1>(ahead as *const i8);
                        }
                        for (a, x) in acc.iter_mut().zip(c) {
                            *a = a.wrapping_add(*x);
                        }
                    }
                    let s = acc.iter().fold(0u64, |s, x| s.wrapping_add(*x));
                    sums[i].store(s, std::sync::atomic::Ordering::Relaxed);
                }
            },
        );
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&sums);
    }
    (words * 8) as f64 / best / 1e9
}

/// Peak resident memory of this process (Linux `VmHWM`), in MB of 10⁶ bytes: the unit of the
/// model file sizes it is set beside.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / 1e6)
}
