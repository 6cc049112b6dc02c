//! A tiny model written on the spot: real GGUF format, real Qwen2 layout and tokenizer metadata,
//! random weights. Tests use it to exercise loading, tokenizing and generation in milliseconds,
//! without a download.

use crate::tokenizer::{byte_to_unicode, token_type};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::path::Path;

/// Merges of the tiny vocabulary, in rank order (GPT-2 byte-level form: `Ġ` is a space).
pub const MERGES: &[&str] = &[
    "Ġ Ġ",
    "ĠĠ ĠĠ",
    "i n",
    "e r",
    "Ġ t",
    "h e",
    "Ġt he",
    "r e",
    "o n",
    "f n",
    "l e",
    "le t",
    "Ġ =",
    "( )",
    "Ċ Ġ",
    "ĊĠ ĠĠ",
];

/// Special tokens appended after the byte tokens and merges.
pub const SPECIALS: &[&str] = &[
    "<|endoftext|>",
    "<|im_end|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
];

/// Shape of the tiny model.
pub struct TinyConfig {
    pub arch: &'static str,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub ffn: usize,
    pub seed: u64,
    /// Unreachable filler tokens added to the vocabulary, to give the embedding and output
    /// layers a real model's size (151,936 tokens in Qwen2.5) for benchmarks.
    pub vocab_pad: usize,
    pub context_length: usize,
    /// Store the matrices as F32 instead of Q5_0/Q8_0: every backend then computes the same
    /// math up to float rounding, which lets tests compare devices tightly.
    pub f32_weights: bool,
}

impl TinyConfig {
    /// The shapes of Qwen2.5-Coder-0.5B (random weights), for benchmarking a backend where the
    /// real file cannot be brought.
    pub fn qwen25_05b_shapes() -> Self {
        Self {
            arch: "qwen2",
            n_layer: 24,
            n_embd: 896,
            n_head: 14,
            n_kv_head: 2,
            ffn: 4864,
            seed: 7,
            vocab_pad: 151_936 - vocabulary_len(0),
            context_length: 32_768,
            f32_weights: false,
        }
    }
}

fn vocabulary_len(pad: usize) -> usize {
    256 + MERGES.len() + SPECIALS.len() + pad
}

impl Default for TinyConfig {
    fn default() -> Self {
        Self {
            arch: "qwen2",
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_kv_head: 2,
            ffn: 128,
            seed: 42,
            vocab_pad: 0,
            context_length: 512,
            f32_weights: false,
        }
    }
}

/// The tiny vocabulary: 256 byte tokens, the merged tokens, the specials, then `pad` fillers.
pub fn vocabulary_padded(pad: usize) -> (Vec<String>, Vec<i32>) {
    let (mut tokens, mut types) = vocabulary();
    for i in 0..pad {
        tokens.push(format!("<nib-pad-{i}>"));
        types.push(token_type::NORMAL);
    }
    (tokens, types)
}

/// The tiny vocabulary: 256 byte tokens, the merged tokens, then the specials.
pub fn vocabulary() -> (Vec<String>, Vec<i32>) {
    let table = byte_to_unicode();
    let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
    for m in MERGES {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![token_type::NORMAL; tokens.len()];
    for s in SPECIALS {
        tokens.push(s.to_string());
        types.push(token_type::CONTROL);
    }
    (tokens, types)
}

/// Writes a tiny model to `path`.
pub fn write(path: &Path, cfg: &TinyConfig) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let (tokens, types) = vocabulary_padded(cfg.vocab_pad);
    let vocab = tokens.len();
    let head_dim = cfg.n_embd / cfg.n_head;
    let mut rng = cfg.seed;
    // Both formats of the real model: Q8_0, and Q5_0 (the one nib's own kernels run).
    let (q8, q5) = if cfg.f32_weights {
        (GgmlDType::F32, GgmlDType::F32)
    } else {
        (GgmlDType::Q8_0, GgmlDType::Q5_0)
    };
    let mut rand =
        |shape: (usize, usize), scale: f32, dtype: GgmlDType| -> candle_core::Result<QTensor> {
            let data: Vec<f32> = (0..shape.0 * shape.1)
                .map(|_| {
                    // xorshift: deterministic, no dependency.
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    ((rng >> 11) as f32 / (1u64 << 53) as f32 - 0.5) * 2.0 * scale
                })
                .collect();
            QTensor::quantize(&Tensor::from_vec(data, shape, &dev)?, dtype)
        };
    let ones = |n: usize| -> candle_core::Result<QTensor> {
        QTensor::quantize(
            &Tensor::ones(n, candle_core::DType::F32, &dev)?,
            GgmlDType::F32,
        )
    };
    let zeros = |n: usize| -> candle_core::Result<QTensor> {
        QTensor::quantize(
            &Tensor::zeros(n, candle_core::DType::F32, &dev)?,
            GgmlDType::F32,
        )
    };
    let kv = cfg.n_kv_head * head_dim;
    let mut tensors: Vec<(String, QTensor)> = vec![
        (
            "token_embd.weight".into(),
            rand((vocab, cfg.n_embd), 1.0, q5)?,
        ),
        ("output_norm.weight".into(), ones(cfg.n_embd)?),
        ("output.weight".into(), rand((vocab, cfg.n_embd), 0.5, q8)?),
    ];
    for i in 0..cfg.n_layer {
        let p = |n: &str| format!("blk.{i}.{n}");
        tensors.push((p("attn_norm.weight"), ones(cfg.n_embd)?));
        tensors.push((p("ffn_norm.weight"), ones(cfg.n_embd)?));
        tensors.push((p("attn_q.weight"), rand((cfg.n_embd, cfg.n_embd), 0.3, q5)?));
        tensors.push((p("attn_k.weight"), rand((kv, cfg.n_embd), 0.3, q8)?));
        tensors.push((p("attn_v.weight"), rand((kv, cfg.n_embd), 0.3, q8)?));
        tensors.push((
            p("attn_output.weight"),
            rand((cfg.n_embd, cfg.n_embd), 0.3, q5)?,
        ));
        if cfg.arch == "qwen2" {
            tensors.push((p("attn_q.bias"), zeros(cfg.n_embd)?));
            tensors.push((p("attn_k.bias"), zeros(kv)?));
            tensors.push((p("attn_v.bias"), zeros(kv)?));
        }
        tensors.push((p("ffn_gate.weight"), rand((cfg.ffn, cfg.n_embd), 0.3, q5)?));
        tensors.push((p("ffn_up.weight"), rand((cfg.ffn, cfg.n_embd), 0.3, q5)?));
        tensors.push((p("ffn_down.weight"), rand((cfg.n_embd, cfg.ffn), 0.3, q8)?));
    }
    let a = cfg.arch;
    let u32v = |x: usize| Value::U32(x as u32);
    let meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        (
            "general.name".into(),
            Value::String("nib tiny test model".into()),
        ),
        (format!("{a}.block_count"), u32v(cfg.n_layer)),
        (format!("{a}.context_length"), u32v(cfg.context_length)),
        (format!("{a}.embedding_length"), u32v(cfg.n_embd)),
        (format!("{a}.feed_forward_length"), u32v(cfg.ffn)),
        (format!("{a}.attention.head_count"), u32v(cfg.n_head)),
        (format!("{a}.attention.head_count_kv"), u32v(cfg.n_kv_head)),
        (format!("{a}.rope.freq_base"), Value::F32(10000.0)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("qwen2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(
                MERGES
                    .iter()
                    .map(|m| Value::String(m.to_string()))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            u32v(vocab - cfg.vocab_pad - SPECIALS.len() + 1),
        ),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    gguf_file::write(&mut f, &meta_refs, &tensor_refs)?;
    use std::io::Write;
    f.flush()?;
    Ok(())
}
