//! The decoder-only transformer of the Qwen2 and Llama families, read top to bottom.
//!
//! Both are pre-norm (RMSNorm), rotary position embeddings, grouped-query attention and a SwiGLU
//! feed-forward block. They differ in two places: Qwen2 has biases on the Q/K/V projections and
//! rotates the two halves of each head ("NeoX" rope); llama.cpp's Llama files rotate interleaved
//! pairs. Weights stay quantized as stored in the GGUF file; the KV cache is explicit, owned by the
//! caller, and can be cut back to any length so that a new prompt reuses its common prefix.

use crate::error::{ModelError, Result};
use crate::generate::CancelToken;
use crate::gguf::GgufFile;
use crate::kernels::{self, Format, QWeight};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use half::f16;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Qwen2,
    Llama,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "qwen2" => Ok(Arch::Qwen2),
            "llama" => Ok(Arch::Llama),
            other => Err(ModelError::UnsupportedArch { arch: other.into() }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub context_length: usize,
    pub vocab_size: usize,
}

impl Config {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let name = g.architecture()?.to_string();
        let arch = Arch::from_name(&name)?;
        let key = |k: &str| format!("{name}.{k}");
        let n_embd = g.usize(&key("embedding_length"))?;
        let n_head = g.usize(&key("attention.head_count"))?;
        let n_kv_head = g.usize(&key("attention.head_count_kv")).unwrap_or(n_head);
        let head_dim = g
            .usize(&key("attention.key_length"))
            .unwrap_or(n_embd / n_head.max(1));
        let vocab_size = match g.content.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => 0,
        };
        let cfg = Self {
            arch,
            n_layer: g.usize(&key("block_count"))?,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            rms_eps: g.f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_base: g.f32(&key("rope.freq_base")).unwrap_or(10_000.0),
            context_length: g.usize(&key("context_length")).unwrap_or(4096),
            vocab_size,
        };
        if cfg.n_head == 0 || cfg.n_kv_head == 0 || !cfg.n_head.is_multiple_of(cfg.n_kv_head) {
            return Err(ModelError::Corrupt {
                path: g.path.clone(),
                detail: format!("{} heads cannot share {} KV heads", n_head, n_kv_head),
            });
        }
        Ok(cfg)
    }
}

/// `x`'s rows (of `k` inputs each) quantized for nib's kernels.
fn quantize_rows(x: &Tensor, k: usize) -> Result<kernels::QActs> {
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    Ok(kernels::quantize_acts(&xs, xs.len() / k, k))
}

/// `acts · wᵀ` as a tensor shaped like `x`, the rows of `acts`, with `w.n()` columns.
fn matmul_rows(acts: &kernels::QActs, w: &QWeight, x: &Tensor) -> Result<Tensor> {
    let mut y = vec![0f32; acts.m() * w.n()];
    kernels::matmul_quantized(acts, w, &mut y);
    let mut dims = x.dims().to_vec();
    *dims
        .last_mut()
        .expect("a tensor with inputs has a last dimension") = w.n();
    Ok(Tensor::from_vec(y, dims, x.device())?)
}

/// The feed-forward block's intermediate buffers, kept for one forward pass
/// ([`Linear::feed_forward`]); dropped with it, so nothing stays allocated between requests.
#[derive(Default)]
pub struct FeedForwardScratch {
    gate: Vec<f32>,
    up: Vec<f32>,
}

/// A quantized linear layer: nib's kernels where they apply (see [`crate::kernels`]), candle's
/// otherwise.
pub enum Linear {
    Fast(QWeight),
    Candle(QMatMul),
}

impl Linear {
    /// Loads tensor `name`. On the CPU every format of the shipped models runs on nib's
    /// kernels, read straight into their own buffer (no second copy of the weights, even for a
    /// moment), every shipped format (Q6_K too) in the panels of `QWeight`. On a GPU, and on CPUs where nib has no SIMD
    /// kernels yet (the `scalar` path, unless `NIB_KERNELS=scalar` asks for it), candle's.
    pub fn load(g: &mut GgufFile, name: &str, device: &Device) -> Result<Self> {
        let ours = device.is_cpu() && kernels::serve_models().map_err(ModelError::Inference)?;
        let format = match g.dtype(name) {
            Some(GgmlDType::Q4_0) => Some(Format::Q4_0),
            Some(GgmlDType::Q5_0) => Some(Format::Q5_0),
            Some(GgmlDType::Q8_0) => Some(Format::Q8_0),
            Some(GgmlDType::Q4K) => Some(Format::Q4K),
            Some(GgmlDType::Q6K) => Some(Format::Q6K),
            _ => None,
        };
        if let (true, Some(format)) = (ours, format) {
            let (_, dims, bytes) = g.raw(name)?;
            if let [n, k] = dims[..] {
                if let Some(w) = QWeight::new(format, n, k, bytes) {
                    return Ok(Linear::Fast(w));
                }
            }
        }
        let t = g.tensor(name, device)?;
        Ok(Linear::Candle(QMatMul::from_qtensor(t)?))
    }

    /// `x` through each of `layers` (which read the same input); those that run on nib's
    /// kernels share one quantization of it.
    pub fn forward_shared(layers: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
        let k = x.dim(candle_core::D::Minus1)?;
        let mut acts: Option<kernels::QActs> = None;
        let mut out = Vec::with_capacity(layers.len());
        for layer in layers {
            out.push(match layer {
                Linear::Candle(q) => candle_forward(q, x)?,
                Linear::Fast(w) => {
                    if k != w.k() {
                        return Err(ModelError::Inference(format!(
                            "linear layer expects {} inputs, got {k}",
                            w.k()
                        )));
                    }
                    let acts = match &acts {
                        Some(a) => a,
                        None => acts.insert(quantize_rows(x, k)?),
                    };
                    matmul_rows(acts, w, x)?
                }
            });
        }
        Ok(out)
    }

    /// `down(silu(gate(x)) · up(x))` on nib's kernels, the same bits as through tensors, with
    /// the activations kept as plain vectors from one matmul to the next: no tensor, copy or
    /// extra buffer between them (the tensor route took 2 passes and 3 buffers of `m × n_ff`
    /// floats more; at 512 tokens of the 1.5B each is 18 MB).
    /// `scratch` holds the gate's and up's outputs from one layer to the next, so that only the
    /// first layer of a pass pays for zeroing them.
    pub fn feed_forward(
        gate: &QWeight,
        up: &QWeight,
        down: &QWeight,
        x: &Tensor,
        scratch: &mut FeedForwardScratch,
    ) -> Result<Tensor> {
        let k = x.dim(candle_core::D::Minus1)?;
        if k != gate.k() || k != up.k() || up.n() != gate.n() || down.k() != gate.n() {
            return Err(ModelError::Inference(format!(
                "feed-forward shapes do not chain: {k} inputs, gate {}×{}, up {}×{}, down {}×{}",
                gate.n(),
                gate.k(),
                up.n(),
                up.k(),
                down.n(),
                down.k()
            )));
        }
        let acts = quantize_rows(x, k)?;
        let m = acts.m();
        let FeedForwardScratch { gate: g, up: u } = scratch;
        // Every element is written by the matmuls: only growth is zeroed.
        g.resize(m * gate.n(), 0.0);
        u.resize(m * up.n(), 0.0);
        kernels::matmul_quantized(&acts, gate, g);
        kernels::matmul_quantized(&acts, up, u);
        kernels::silu_mul(g, u);
        matmul_rows(&kernels::quantize_acts(g, m, gate.n()), down, x)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(Self::forward_shared(&[self], x)?.remove(0))
    }

    /// Bytes of weights one token reads.
    fn bytes(&self) -> u64 {
        match self {
            Linear::Fast(w) => w.bytes() as u64,
            Linear::Candle(QMatMul::QTensor(t)) => t.storage_size_in_bytes() as u64,
            Linear::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
                (t.elem_count() * t.dtype().size_in_bytes()) as u64
            }
        }
    }
}

/// candle's quantized matmul, in row chunks where the whole batch would go wrong:
/// - 2 to 16 rows (a speculative draft being checked) one row at a time, since candle's kernels
///   round differently for one row than for a batch, except for Q4_K, whose packed tiles serve
///   one row and many alike (bit-identical, checked on the real weights);
/// - from 32 rows on, on the CPU only, chunks of 24: there candle packs Q4_K weights a second
///   time (for AMX tiles) and keeps both packings for the model's lifetime. On a GPU the whole
///   batch goes at once (chunking it there halved prefill on an H200).
fn candle_forward(q: &QMatMul, x: &Tensor) -> Result<Tensor> {
    let rows = x.elem_count() / x.dim(candle_core::D::Minus1)?;
    let tiles_for_every_m = matches!(q, QMatMul::QTensor(t) if t.dtype() == GgmlDType::Q4K);
    let chunk = match rows {
        2..=16 if !tiles_for_every_m => 1,
        32.. if x.device().is_cpu() => 24,
        _ => return Ok(q.forward(x)?),
    };
    let x2 = x.flatten_to(candle_core::D::Minus2)?;
    let outs = (0..rows)
        .step_by(chunk)
        .map(|r| q.forward(&x2.narrow(0, r, chunk.min(rows - r))?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let out = Tensor::cat(&outs, 0)?;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().unwrap() = out.dim(1)?;
    Ok(out.reshape(dims)?)
}

struct Layer {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    bq: Option<Tensor>,
    bk: Option<Tensor>,
    bv: Option<Tensor>,
    wo: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Transformer {
    pub cfg: Config,
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    /// Rotary frequencies, one per pair of head dimensions.
    inv_freq: Vec<f32>,
    device: Device,
    /// Attention through candle's tensor ops with the cache on the device (GPUs), rather than
    /// nib's CPU kernel over host vectors. On by default off the CPU; tests turn it on on the CPU
    /// to check the GPU path against the CPU one.
    pub tensor_attention: bool,
}

/// Keys and values of every layer for the tokens seen so far. On the CPU: per layer, per KV
/// head, one `len × head_dim` run of f16 (rounded to nearest from the f32 the layer computes,
/// as llama.cpp's default cache does: half the memory) that nib's attention kernel reads in
/// place (room grows 256 positions at a time; cutting back is free). On a GPU: per layer, one
/// `(1, n_kv_head, len, head_dim)` tensor each for keys and values, on the device, in f32 but
/// rounded to f16 values like the CPU's.
pub struct KvCache {
    k: Vec<Vec<Vec<f16>>>,
    v: Vec<Vec<Vec<f16>>>,
    dev: Vec<Option<(Tensor, Tensor)>>,
    head_dim: usize,
    len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize, n_kv_head: usize, head_dim: usize) -> Self {
        Self {
            k: vec![vec![Vec::new(); n_kv_head]; n_layer],
            v: vec![vec![Vec::new(); n_kv_head]; n_layer],
            dev: vec![None; n_layer],
            head_dim,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position from `n` on (also in layers a cancelled pass had reached).
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        for head in self.k.iter_mut().chain(self.v.iter_mut()).flatten() {
            head.truncate(n * self.head_dim);
        }
        for slot in &mut self.dev {
            if let Some((k, v)) = slot {
                let have = k.dim(2)?;
                if n == 0 {
                    *slot = None;
                } else if have > n {
                    *slot = Some((k.narrow(2, 0, n)?, v.narrow(2, 0, n)?));
                }
            }
        }
        self.len = self.len.min(n);
        Ok(())
    }

    /// Appends `l` new positions of layer `layer` from `(n_kv_head, l, head_dim)` data.
    fn append(&mut self, layer: usize, k: &[f32], v: &[f32], l: usize) {
        let run = l * self.head_dim;
        // Room in steps of 256 positions rather than doubling: at most 255 idle positions per
        // head instead of as many as it holds.
        let step = 256 * self.head_dim;
        for (g, (kh, vh)) in self.k[layer].iter_mut().zip(&mut self.v[layer]).enumerate() {
            for x in [&mut *kh, &mut *vh] {
                let want = (x.len() + run).div_ceil(step) * step;
                if x.capacity() < want {
                    x.reserve_exact(want - x.len());
                }
            }
            kh.extend(k[g * run..(g + 1) * run].iter().map(|&x| f16::from_f32(x)));
            vh.extend(v[g * run..(g + 1) * run].iter().map(|&x| f16::from_f32(x)));
        }
    }

    /// Appends `(1, n_kv_head, l, head_dim)` device tensors to layer `layer` and returns the
    /// layer's keys and values for every cached position.
    fn append_device(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let kv = match self.dev[layer].take() {
            None => (k, v),
            Some((k0, v0)) => (Tensor::cat(&[&k0, &k], 2)?, Tensor::cat(&[&v0, &v], 2)?),
        };
        let kv = (kv.0.contiguous()?, kv.1.contiguous()?);
        self.dev[layer] = Some(kv.clone());
        Ok(kv)
    }
}

impl Transformer {
    pub fn load(g: &mut GgufFile, device: &Device) -> Result<Self> {
        let cfg = Config::from_gguf(g)?;
        let embed = Arc::new(g.tensor("token_embd.weight", device)?);
        let output = if g.has_tensor("output.weight") {
            Linear::load(g, "output.weight", device)?
        } else {
            Linear::Candle(QMatMul::from_arc(embed.clone())?)
        };
        let norm = g.tensor("output_norm.weight", device)?.dequantize(device)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |name: &str| format!("blk.{i}.{name}");
            let mut mm = |name: &str| -> Result<Linear> { Linear::load(g, &p(name), device) };
            let (wq, wk, wv, wo) = (
                mm("attn_q.weight")?,
                mm("attn_k.weight")?,
                mm("attn_v.weight")?,
                mm("attn_output.weight")?,
            );
            let (gate, up, down) = (
                mm("ffn_gate.weight")?,
                mm("ffn_up.weight")?,
                mm("ffn_down.weight")?,
            );
            let mut dense = |name: &str| -> Result<Tensor> {
                Ok(g.tensor(&p(name), device)?.dequantize(device)?)
            };
            let attn_norm = dense("attn_norm.weight")?;
            let ffn_norm = dense("ffn_norm.weight")?;
            let mut bias = |name: &str| -> Result<Option<Tensor>> {
                if g.has_tensor(&p(name)) {
                    Ok(Some(g.tensor(&p(name), device)?.dequantize(device)?))
                } else {
                    Ok(None)
                }
            };
            let (bq, bk, bv) = (
                bias("attn_q.bias")?,
                bias("attn_k.bias")?,
                bias("attn_v.bias")?,
            );
            layers.push(Layer {
                attn_norm,
                wq,
                wk,
                wv,
                bq,
                bk,
                bv,
                wo,
                ffn_norm,
                gate,
                up,
                down,
            });
        }
        let half = cfg.head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| 1.0 / cfg.rope_base.powf(2.0 * i as f32 / cfg.head_dim as f32))
            .collect();
        Ok(Self {
            cfg,
            embed,
            layers,
            norm,
            output,
            inv_freq,
            device: device.clone(),
            tensor_attention: !device.is_cpu(),
        })
    }

    /// The kernel path of the linear layers: nib's (`avx2`, …) or `candle`'s.
    pub fn kernels(&self) -> &'static str {
        match &self.output {
            Linear::Fast(_) => kernels::path().name(),
            Linear::Candle(_) => "candle",
        }
    }

    /// Bytes of weights a decoded token reads: every linear layer (the output layer too), which
    /// sets decode's memory-bandwidth bound.
    pub fn weight_bytes_per_token(&self) -> u64 {
        let layers: u64 = self
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down])
            .map(Linear::bytes)
            .sum();
        layers + self.output.bytes()
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layer, self.cfg.n_kv_head, self.cfg.head_dim)
    }

    /// Runs `tokens` at positions `cache.len()..` and returns the logits of the last `n_out` of
    /// them, `(n_out × vocab)` flattened (none at all for `n_out == 0`). `cancel` is checked between layers; a cancelled pass
    /// leaves the cache as it was.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        cancel: Option<&CancelToken>,
        n_out: usize,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (l, pos) = (tokens.len(), cache.len);
        if l == 0 {
            return Err(ModelError::Inference(
                "forward called with no tokens".into(),
            ));
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.embedding(&ids)?.unsqueeze(0)?; // (1, L, D)
        let (cos, sin) = self.rope_tables(pos, l)?;
        // The causal mask of the tensor path, built once per pass rather than once per layer.
        let mask = if self.tensor_attention && l > 1 {
            Some(self.causal_mask(pos, l)?)
        } else {
            None
        };
        let mut scratch = FeedForwardScratch::default();
        for (i, layer) in self.layers.iter().enumerate() {
            if cancel.is_some_and(CancelToken::is_cancelled) {
                cache.truncate(pos)?;
                return Err(ModelError::Cancelled);
            }
            // Attention block.
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps)?;
            let qkv = Linear::forward_shared(&[&layer.wq, &layer.wk, &layer.wv], &h)?;
            let project = |y: &Tensor, b: &Option<Tensor>, heads: usize| -> Result<Tensor> {
                let y = match b {
                    Some(b) => y.broadcast_add(b)?,
                    None => y.clone(),
                };
                Ok(y.reshape((1, l, heads, cfg.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = project(&qkv[0], &layer.bq, cfg.n_head)?;
            let k = project(&qkv[1], &layer.bk, cfg.n_kv_head)?;
            let v = project(&qkv[2], &layer.bv, cfg.n_kv_head)?;
            let (q, k) = match cfg.arch {
                Arch::Qwen2 => (
                    candle_nn::rotary_emb::rope(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope(&k, &cos, &sin)?,
                ),
                Arch::Llama => (
                    candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
                ),
            };
            let y = if !self.tensor_attention {
                let as_vec =
                    |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
                cache.append(i, &as_vec(&k)?, &as_vec(&v)?, l);
                let y = kernels::attention(
                    &as_vec(&q)?,
                    l,
                    pos,
                    &cache.k[i],
                    &cache.v[i],
                    cfg.n_head,
                    cfg.head_dim,
                );
                Tensor::from_vec(y, (1, l, cfg.n_head * cfg.head_dim), &self.device)?
            } else {
                // Rounded to f16 as the CPU cache stores them, so that both attend to the
                // same keys and values.
                let f16_round = |t: Tensor| -> Result<Tensor> {
                    Ok(t.to_dtype(DType::F16)?.to_dtype(DType::F32)?)
                };
                let (k, v) = cache.append_device(i, f16_round(k)?, f16_round(v)?)?;
                self.device_attention(&q, &k, &v, mask.as_ref())?
            };
            x = (x + layer.wo.forward(&y)?)?;
            // Feed-forward block.
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps)?;
            let ffn = match (&layer.gate, &layer.up, &layer.down) {
                (Linear::Fast(gate), Linear::Fast(up), Linear::Fast(down)) => {
                    Linear::feed_forward(gate, up, down, &h, &mut scratch)?
                }
                _ => {
                    let gate_up = Linear::forward_shared(&[&layer.gate, &layer.up], &h)?;
                    let gate = candle_nn::ops::silu(&gate_up[0])?;
                    layer.down.forward(&(gate * &gate_up[1])?)?
                }
            };
            x = (x + ffn)?;
        }
        cache.len = pos + l;
        if n_out == 0 {
            // A prefill chunk that is not the last: its logits are never looked at.
            return Ok(Tensor::zeros(0, DType::F32, &self.device)?);
        }
        let n_out = n_out.min(l);
        let last = x.narrow(1, l - n_out, n_out)?.contiguous()?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, cfg.rms_eps)?;
        Ok(self
            .output
            .forward(&last)?
            .flatten_all()?
            .to_dtype(DType::F32)?)
    }

    /// The additive causal mask for `l` queries at positions `pos..pos + l`, in the row order
    /// of [`Self::device_attention`]: row `r` is query `r % l` and sees keys `0..=pos + r % l`.
    fn causal_mask(&self, pos: usize, l: usize) -> Result<Tensor> {
        let group = self.cfg.n_head / self.cfg.n_kv_head;
        let t = pos + l;
        let mut mask = vec![0f32; group * l * t];
        for (r, row) in mask.chunks_mut(t).enumerate() {
            row[pos + r % l + 1..].fill(f32::NEG_INFINITY);
        }
        Ok(Tensor::from_vec(mask, (group * l, t), &self.device)?)
    }

    /// Causal grouped-query attention with candle's tensor ops, for GPU devices: `q` is
    /// `(1, n_head, l, head_dim)`, `k`/`v` are `(1, n_kv_head, pos + l, head_dim)`, `mask` is
    /// [`Self::causal_mask`] (none for a single query). Returns `(1, l, n_head * head_dim)`.
    fn device_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let l = q.dim(2)?;
        let group = cfg.n_head / cfg.n_kv_head;
        // Heads that share a KV head are adjacent: fold them into the query rows of that head.
        let q = q.reshape((1, cfg.n_kv_head, group * l, cfg.head_dim))?;
        let scale = 1.0 / (cfg.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?; // (1, kv, group * l, t)
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs.matmul(v)?; // (1, kv, group * l, head_dim)
        Ok(y.reshape((1, cfg.n_head, l, cfg.head_dim))?
            .transpose(1, 2)?
            .reshape((1, l, cfg.n_head * cfg.head_dim))?)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// cos and sin tables for positions `pos..pos + l`: `(l, head_dim / 2)`.
    fn rope_tables(&self, pos: usize, l: usize) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut angles = Vec::with_capacity(l * half);
        for p in pos..pos + l {
            angles.extend(self.inv_freq.iter().map(|f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (l, half), &self.device)?;
        Ok((angles.cos()?, angles.sin()?))
    }
}

/// Index of the largest logit, never one of `banned`.
pub fn argmax(logits: &[f32], banned: &[u32]) -> u32 {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (i, &x) in logits.iter().enumerate() {
        if x > best.1 {
            best = (i as u32, x);
        }
    }
    if !banned.contains(&best.0) {
        return best.0;
    }
    // Rare: the best token is banned. Rescan with the banned ones masked out.
    let mut masked = logits.to_vec();
    for &b in banned {
        if let Some(x) = masked.get_mut(b as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
    argmax(&masked, &[])
}

/// Logits as a plain vector of f32.
pub fn logits_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}
