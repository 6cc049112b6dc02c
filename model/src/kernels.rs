//! Quantized weights × activations on the CPU, where candle is slow.
//!
//! candle 0.11 multiplies Q5_0 weights (most of Qwen2.5-Coder-0.5B's "Q4_K_M" file) with a scalar
//! loop, and runs a prompt of `m` tokens as `m` separate passes over every weight. Here a tile of
//! weight rows is decoded once into unsigned 8-bit codes and then dotted with every activation
//! row while it sits in L1, four activation rows at a time, with AVX-512 VNNI (`vpdpbusd`: 64
//! u8×i8 products per instruction). Q8_0 goes the same way, and so do the model's Q6_K tensors,
//! requantized to Q8_0 at load (see `transformer.rs`). Q4_K stays with candle, whose kernels
//! for it were measured faster than this approach.
//!
//! The maths: a weight block is `x = a·(u − c)` with `u` unsigned (Q5_0: `u = x/a + 16`, 0..31;
//! Q8_0: `u = x/a + 128`), activations are quantized per 32-block as `y = d·q` (`q` i8). So
//! `Σ x·y = a·d·Σ u·q − c·a·(d·Σq)`: one VNNI dot per block plus a correction from per-block sums
//! computed once per activation row.
//!
//! Decoding (fewer than 4 activation rows) decodes each block in registers instead of through a
//! tile: the same arithmetic in the same order, so one row or a batch give bit-identical results.
//! The causal attention over the KV cache lives here too.
//!
//! On CPUs without AVX-512 VNNI the transformer keeps candle's own kernels ([`available`] is
//! false); the scalar code here then serves direct callers and is the tests' reference.

use half::f16;

/// Elements per quantization block (Q5_0, Q8_0 and the activations).
pub const QK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q5_0,
    Q8_0,
}

impl Format {
    pub fn block_bytes(self) -> usize {
        match self {
            Format::Q5_0 => 22,
            Format::Q8_0 => 34,
        }
    }

    fn offset(self) -> f32 {
        match self {
            Format::Q5_0 => 16.0,
            Format::Q8_0 => 128.0,
        }
    }
}

/// A weight matrix of `n` rows (output features) by `k` columns, in GGUF block layout.
pub struct QWeight {
    pub format: Format,
    pub n: usize,
    pub k: usize,
    data: Vec<u8>,
}

impl QWeight {
    pub fn new(format: Format, n: usize, k: usize, data: Vec<u8>) -> Option<Self> {
        let ok = k.is_multiple_of(QK) && data.len() == n * (k / QK) * format.block_bytes();
        ok.then_some(Self { format, n, k, data })
    }

    /// Decodes row `j` into unsigned codes `u` (k bytes) and block scales `a` (k/32).
    pub fn expand_row(&self, j: usize, u: &mut [u8], a: &mut [f32]) {
        let nb = self.k / QK;
        let bb = self.format.block_bytes();
        let row = &self.data[j * nb * bb..(j + 1) * nb * bb];
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: `available` checked the CPU features the function is compiled for.
            unsafe { x86::expand_row(self.format, row, u, a) };
            return;
        }
        expand_row_scalar(self.format, row, u, a);
    }
}

fn expand_row_scalar(format: Format, row: &[u8], u: &mut [u8], a: &mut [f32]) {
    let bb = format.block_bytes();
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        a[b] = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let out = &mut u[b * QK..(b + 1) * QK];
        match format {
            Format::Q5_0 => {
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                for j in 0..16 {
                    let q = blk[6 + j];
                    out[j] = (q & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
                    out[j + 16] = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
                }
            }
            Format::Q8_0 => {
                for j in 0..QK {
                    out[j] = blk[2 + j] ^ 0x80;
                }
            }
        }
    }
}

/// Quantizes weights to GGUF Q8_0 blocks (an f16 scale `amax/127`, then 32 i8 codes, rounded
/// half away from zero), as ggml's reference quantizer does. `x.len()` must be a multiple of 32.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK * Format::Q8_0.block_bytes());
    for blk in x.chunks_exact(QK) {
        let amax = blk.iter().fold(0f32, |acc, v| acc.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(blk.iter().map(|v| ((v * inv).round() as i8) as u8));
    }
    out
}

/// Activations quantized to 8 bits per 32-block.
pub struct QActs {
    pub m: usize,
    pub k: usize,
    pub q: Vec<i8>,
    /// Block scales, `m × k/32`.
    pub d: Vec<f32>,
    /// `d · Σq` per block, `m × k/32`.
    pub ds: Vec<f32>,
    /// `d` repeated 8 times per block (one per i32 lane of a block's VNNI dot), `m × k/4`.
    pub d_lanes: Vec<f32>,
}

/// Quantizes `m` rows of `k` activations (round half away from zero, as ggml does).
pub fn quantize_acts(x: &[f32], m: usize, k: usize) -> QActs {
    let nb = k / QK;
    let mut q = vec![0i8; m * k];
    let mut d = vec![0f32; m * nb];
    let mut ds = vec![0f32; m * nb];
    for (i, (blk, qb)) in x.chunks_exact(QK).zip(q.chunks_exact_mut(QK)).enumerate() {
        let amax = blk.iter().fold(0f32, |acc, v| acc.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let mut sum = 0i32;
        for (o, v) in qb.iter_mut().zip(blk) {
            let r = (v * inv).round() as i32;
            *o = r as i8;
            sum += r;
        }
        d[i] = scale;
        ds[i] = scale * sum as f32;
    }
    let d_lanes = d.iter().flat_map(|&x| [x; 8]).collect();
    QActs {
        m,
        k,
        q,
        d,
        ds,
        d_lanes,
    }
}

/// Whether this CPU runs the fast kernels (x86-64 with AVX-512 BW/VL and VNNI), unless the
/// environment variable `NIB_KERNELS=candle` asks for candle's.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("NIB_KERNELS").is_ok_and(|v| v == "candle") {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("f16c")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// A few decoded weight rows, kept in L1 while every activation row passes by.
struct Tile {
    rows: usize,
    k: usize,
    u: Vec<u8>,
    a: Vec<f32>,
    a_lanes: Vec<f32>,
}

impl Tile {
    fn new(rows: usize, k: usize) -> Self {
        Self {
            rows: 0,
            k,
            u: vec![0; rows * k],
            a: vec![0.0; rows * k / QK],
            a_lanes: vec![0.0; rows * k / 4],
        }
    }

    fn fill(&mut self, w: &QWeight, rows: std::ops::Range<usize>) {
        let nb = self.k / QK;
        self.rows = rows.len();
        for (r, j) in rows.enumerate() {
            let a = &mut self.a[r * nb..(r + 1) * nb];
            w.expand_row(j, &mut self.u[r * self.k..(r + 1) * self.k], a);
            for (b, &x) in a.iter().enumerate() {
                self.a_lanes[(r * nb + b) * 8..(r * nb + b + 1) * 8].fill(x);
            }
        }
    }

    /// Calls `put(i, r, v)` with `v` = activation row `i` · weight row `r`.
    fn dot_all(&self, offset: f32, acts: &QActs, mut put: impl FnMut(usize, usize, f32)) {
        let (k, nb, m) = (self.k, self.k / QK, acts.m);
        let row = |r: usize| {
            (
                &self.u[r * k..(r + 1) * k],
                &self.a[r * nb..(r + 1) * nb],
                &self.a_lanes[r * nb * 8..(r + 1) * nb * 8],
            )
        };
        let act = |i: usize| {
            (
                &acts.q[i * k..(i + 1) * k],
                &acts.d[i * nb..(i + 1) * nb],
                &acts.ds[i * nb..(i + 1) * nb],
            )
        };
        #[cfg(target_arch = "x86_64")]
        if available() {
            let mut i = 0;
            while i + 4 <= m {
                for r in 0..self.rows {
                    let (u, a, a_lanes) = row(r);
                    // SAFETY: `available` checked the CPU features the function is compiled for.
                    let v = unsafe { x86::dot4(u, a, a_lanes, offset, acts, i) };
                    for (di, v) in v.into_iter().enumerate() {
                        put(i + di, r, v);
                    }
                }
                i += 4;
            }
            for i in i..m {
                let (q, d, ds) = act(i);
                for r in 0..self.rows {
                    let (u, a, _) = row(r);
                    // SAFETY: as above.
                    put(i, r, unsafe { x86::dot(u, a, offset, q, d, ds) });
                }
            }
            return;
        }
        for r in 0..self.rows {
            let (u, a, _) = row(r);
            for i in 0..m {
                let (q, d, ds) = act(i);
                put(i, r, dot_scalar(u, a, offset, q, d, ds));
            }
        }
    }
}

pub fn dot_scalar(u: &[u8], a: &[f32], offset: f32, q: &[i8], d: &[f32], ds: &[f32]) -> f32 {
    let mut sum = 0f32;
    for b in 0..a.len() {
        let mut s = 0i32;
        for j in b * QK..(b + 1) * QK {
            s += u[j] as i32 * q[j] as i32;
        }
        sum += a[b] * (d[b] * s as f32 - offset * ds[b]);
    }
    sum
}

struct SyncPtr(*mut f32);
// SAFETY: tasks write disjoint rows through it (see `matmul`).
unsafe impl Sync for SyncPtr {}

/// `out (m × n) = x (m × k) · wᵀ`, rows of `x` and `out` contiguous.
pub fn matmul(x: &[f32], m: usize, w: &QWeight, out: &mut [f32]) {
    assert_eq!(x.len(), m * w.k, "activations are not m × k");
    matmul_quantized(&quantize_acts(x, m, w.k), w, out);
}

/// [`matmul`] on activations quantized already: layers that read the same input (q, k, v;
/// gate, up) quantize it once.
pub fn matmul_quantized(acts: &QActs, w: &QWeight, out: &mut [f32]) {
    let (m, x_k) = (acts.m, acts.k);
    assert_eq!(
        x_k, w.k,
        "activations have {x_k} columns, the weights {}",
        w.k
    );
    assert_eq!(out.len(), m * w.n, "output is not m × n");
    let offset = w.format.offset();
    let n = w.n;
    let out_ptr = SyncPtr(out.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    if m < 4 && available() {
        // Decoding: nothing to share a decoded row with, so decode each block in registers and
        // dot it at once. Bit for bit what the tile path computes for a row.
        let (k, nb, bb) = (w.k, w.k / QK, w.format.block_bytes());
        let rows_per_task = 64;
        candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(rows_per_task), |tasks| {
            let out_ptr = &out_ptr;
            let mut a = vec![0f32; nb];
            for t in tasks {
                for j in t * rows_per_task..((t + 1) * rows_per_task).min(n) {
                    let row = &w.data[j * nb * bb..(j + 1) * nb * bb];
                    for i in 0..m {
                        // SAFETY: `available` checked the CPU features; (i, j) is this task's.
                        unsafe {
                            *out_ptr.0.add(i * n + j) = x86::gemv_row(
                                w.format,
                                row,
                                &acts.q[i * k..(i + 1) * k],
                                &acts.d[i * nb..(i + 1) * nb],
                                &acts.ds[i * nb..(i + 1) * nb],
                                &mut a,
                            );
                        }
                    }
                }
            }
        });
        return;
    }
    // Each task owns a tile of 16 weight rows (one 64-byte line of each output row): decode them
    // once, dot them with every activation row while they sit in L1. The tasks run on candle's
    // own worker threads, so the two never compete for the cores.
    let rows_per_task = 16;
    let n_tasks = w.n.div_ceil(rows_per_task);
    candle_core::utils::barrier_pool().execute_chunked(n_tasks, |tasks| {
        let out_ptr = &out_ptr;
        let mut tile = Tile::new(rows_per_task, w.k);
        for t in tasks {
            let rows = t * rows_per_task..((t + 1) * rows_per_task).min(w.n);
            tile.fill(w, rows.clone());
            tile.dot_all(offset, acts, |i, r, v| {
                // SAFETY: output columns `rows` are written by this task alone, and i < m,
                // r < rows.len(), so the index is inside the m × n output.
                unsafe { *out_ptr.0.add(i * n + rows.start + r) = v };
            });
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Format, QK};
    use std::arch::x86_64::*;

    /// One block's unsigned codes, in a register, and its scale.
    #[inline(always)]
    unsafe fn block_codes(format: Format, blk: *const u8) -> (__m256i, f32) {
        // f16 → f32 in hardware (exact, like `half`'s conversion).
        let bits = (blk as *const u16).read_unaligned();
        let a = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)));
        let v = match format {
            Format::Q5_0 => {
                let low = _mm_set1_epi8(0x0f);
                let qh = (blk.add(2) as *const u32).read_unaligned();
                let qs = _mm_loadu_si128(blk.add(6) as *const __m128i);
                let lo = _mm_and_si128(qs, low);
                let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), low);
                let v = _mm256_set_m128i(hi, lo);
                _mm256_mask_add_epi8(v, qh, v, _mm256_set1_epi8(0x10))
            }
            Format::Q8_0 => _mm256_xor_si256(
                _mm256_loadu_si256(blk.add(2) as *const __m256i),
                _mm256_set1_epi8(-128),
            ),
        };
        (v, a)
    }

    /// One stored weight row against one activation row, decoding in registers: the same
    /// arithmetic, in the same order, as `expand_row` followed by `dot`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
    pub unsafe fn gemv_row(
        format: Format,
        row: &[u8],
        q: &[i8],
        d: &[f32],
        ds: &[f32],
        a: &mut [f32],
    ) -> f32 {
        let bb = format.block_bytes();
        let nb = row.len() / bb;
        let mut acc = _mm512_setzero_ps();
        let mut b = 0;
        while b + 2 <= nb {
            let (c0, a0) = block_codes(format, row.as_ptr().add(b * bb));
            let (c1, a1) = block_codes(format, row.as_ptr().add((b + 1) * bb));
            a[b] = a0;
            a[b + 1] = a1;
            let uv = _mm512_inserti64x4(_mm512_castsi256_si512(c0), c1, 1);
            let qv = _mm512_loadu_si512(q.as_ptr().add(b * QK) as *const _);
            let dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), uv, qv);
            let s0 = _mm512_set1_ps(a0 * *d.get_unchecked(b));
            let s1 = _mm512_set1_ps(a1 * *d.get_unchecked(b + 1));
            let s = _mm512_mask_blend_ps(0xff00, s0, s1);
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), s, acc);
            b += 2;
        }
        let mut sum = _mm512_reduce_add_ps(acc);
        if b < nb {
            let (c, a0) = block_codes(format, row.as_ptr().add(b * bb));
            a[b] = a0;
            let qv = _mm256_loadu_si256(q.as_ptr().add(b * QK) as *const __m256i);
            let dp = _mm256_dpbusd_epi32(_mm256_setzero_si256(), c, qv);
            let mut lanes = [0i32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, dp);
            sum += a0 * d[b] * lanes.iter().sum::<i32>() as f32;
        }
        sum - format.offset() * correction(&a[..nb], ds)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub unsafe fn expand_row(format: Format, row: &[u8], u: &mut [u8], a: &mut [f32]) {
        let bb = format.block_bytes();
        let nb = row.len() / bb;
        debug_assert!(u.len() >= nb * QK && a.len() >= nb);
        for b in 0..nb {
            let (v, scale) = block_codes(format, row.as_ptr().add(b * bb));
            *a.get_unchecked_mut(b) = scale;
            _mm256_storeu_si256(u.as_mut_ptr().add(b * QK) as *mut __m256i, v);
        }
    }

    /// One weight row against activation rows `i..i + 4`: the weight codes are loaded once per
    /// block pair for four VNNI dots.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot4(
        u: &[u8],
        a: &[f32],
        a_lanes: &[f32],
        offset: f32,
        acts: &super::QActs,
        i: usize,
    ) -> [f32; 4] {
        let (k, nb) = (acts.k, acts.k / QK);
        let q: [*const i8; 4] = std::array::from_fn(|r| acts.q.as_ptr().add((i + r) * k));
        let dl: [*const f32; 4] =
            std::array::from_fn(|r| acts.d_lanes.as_ptr().add((i + r) * nb * 8));
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut b = 0;
        while b + 2 <= nb {
            let uv = _mm512_loadu_si512(u.as_ptr().add(b * QK) as *const _);
            let av = _mm512_loadu_ps(a_lanes.as_ptr().add(b * 8));
            for r in 0..4 {
                let qv = _mm512_loadu_si512(q[r].add(b * QK) as *const _);
                let dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), uv, qv);
                let s = _mm512_mul_ps(av, _mm512_loadu_ps(dl[r].add(b * 8)));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), s, acc[r]);
            }
            b += 2;
        }
        let mut out = [0f32; 4];
        for r in 0..4 {
            let row = i + r;
            let mut sum = _mm512_reduce_add_ps(acc[r]);
            if b < nb {
                let uv = _mm256_loadu_si256(u.as_ptr().add(b * QK) as *const __m256i);
                let qv = _mm256_loadu_si256(q[r].add(b * QK) as *const __m256i);
                let dp = _mm256_dpbusd_epi32(_mm256_setzero_si256(), uv, qv);
                let mut lanes = [0i32; 8];
                _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, dp);
                sum += a[b] * acts.d[row * nb + b] * lanes.iter().sum::<i32>() as f32;
            }
            let ds = &acts.ds[row * nb..(row + 1) * nb];
            out[r] = sum - offset * correction(a, ds);
        }
        out
    }

    /// `Σ a·ds`, 16 lanes at a time.
    #[target_feature(enable = "avx512f")]
    unsafe fn correction(a: &[f32], ds: &[f32]) -> f32 {
        let n = a.len();
        let mut acc = _mm512_setzero_ps();
        let mut j = 0;
        while j < n {
            let mask: __mmask16 = if n - j >= 16 {
                0xffff
            } else {
                (1u16 << (n - j)) - 1
            };
            let x = _mm512_maskz_loadu_ps(mask, a.as_ptr().add(j));
            let y = _mm512_maskz_loadu_ps(mask, ds.as_ptr().add(j));
            acc = _mm512_fmadd_ps(x, y, acc);
            j += 16;
        }
        _mm512_reduce_add_ps(acc)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot(u: &[u8], a: &[f32], offset: f32, q: &[i8], d: &[f32], ds: &[f32]) -> f32 {
        let nb = a.len();
        let mut acc = _mm512_setzero_ps();
        let mut b = 0;
        while b + 2 <= nb {
            let uv = _mm512_loadu_si512(u.as_ptr().add(b * QK) as *const _);
            let qv = _mm512_loadu_si512(q.as_ptr().add(b * QK) as *const _);
            let dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), uv, qv);
            let s0 = _mm512_set1_ps(*a.get_unchecked(b) * *d.get_unchecked(b));
            let s1 = _mm512_set1_ps(*a.get_unchecked(b + 1) * *d.get_unchecked(b + 1));
            let s = _mm512_mask_blend_ps(0xff00, s0, s1);
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), s, acc);
            b += 2;
        }
        let mut sum = _mm512_reduce_add_ps(acc);
        if b < nb {
            let uv = _mm256_loadu_si256(u.as_ptr().add(b * QK) as *const __m256i);
            let qv = _mm256_loadu_si256(q.as_ptr().add(b * QK) as *const __m256i);
            let dp = _mm256_dpbusd_epi32(_mm256_setzero_si256(), uv, qv);
            let mut lanes = [0i32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, dp);
            sum += a[b] * d[b] * lanes.iter().sum::<i32>() as f32;
        }
        sum - offset * correction(a, ds)
    }
}

#[cfg(test)]
mod tests {
    //! The kernels against candle's own quantized matmul, on random weights of the model's
    //! shapes (the real weights are checked in tests/kernels_real.rs), and the SIMD decoding
    //! against the scalar one.
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    fn rel_err(a: &[f32], b: &[f32]) -> f64 {
        let (num, den) = a.iter().zip(b).fold((0f64, 0f64), |(n, d), (x, y)| {
            (n + ((x - y) as f64).powi(2), d + (*x as f64).powi(2))
        });
        (num / den).sqrt()
    }

    fn check(dtype: GgmlDType, format: Format, n: usize, k: usize, m: usize) {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let bytes = q.data().unwrap().into_owned();
        let ours = QWeight::new(format, n, k, bytes.clone()).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let want = QMatMul::from_qtensor(q).unwrap().forward(&x).unwrap();
        let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut got = vec![0f32; m * n];
        matmul(&xs, m, &ours, &mut got);
        let e = rel_err(&want, &got);
        assert!(e <= 1e-3, "{format:?} {n}x{k} m={m}: relative error {e}");
        // SIMD and scalar decoding agree.
        let nb = k / QK;
        let (mut u1, mut a1) = (vec![0u8; k], vec![0f32; nb]);
        let (mut u2, mut a2) = (vec![0u8; k], vec![0f32; nb]);
        let row = &bytes[(n - 1) * nb * format.block_bytes()..];
        ours.expand_row(n - 1, &mut u1, &mut a1);
        expand_row_scalar(format, row, &mut u2, &mut a2);
        assert_eq!((u1, a1), (u2, a2));
    }

    #[test]
    fn one_row_at_a_time_is_bit_identical_to_a_batch() {
        let dev = Device::Cpu;
        for (dtype, format) in [
            (GgmlDType::Q5_0, Format::Q5_0),
            (GgmlDType::Q8_0, Format::Q8_0),
        ] {
            let (n, k, m) = (37, 96, 6);
            let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let ours = QWeight::new(format, n, k, q.data().unwrap().into_owned()).unwrap();
            let xs: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &dev)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut batch = vec![0f32; m * n];
            matmul(&xs, m, &ours, &mut batch);
            for i in 0..m {
                let mut one = vec![0f32; n];
                matmul(&xs[i * k..(i + 1) * k], 1, &ours, &mut one);
                assert_eq!(one, batch[i * n..(i + 1) * n], "{format:?} row {i}");
            }
        }
    }

    #[test]
    fn q5_0_matches_candle() {
        for (n, k, m) in [(64, 896, 1), (200, 896, 7), (96, 4864, 3), (40, 96, 5)] {
            check(GgmlDType::Q5_0, Format::Q5_0, n, k, m);
        }
    }

    #[test]
    fn q8_0_matches_candle() {
        check(GgmlDType::Q8_0, Format::Q8_0, 48, 896, 4);
        check(GgmlDType::Q8_0, Format::Q8_0, 33, 160, 1);
    }
}

/// Causal attention of `l` new queries (positions `pos..pos + l`) over the cached keys.
///
/// `q` is `(n_head, l, head_dim)`; `k[g]` and `v[g]` hold KV head `g`'s cached positions,
/// `(pos + l) × head_dim`; query head `h` reads KV head `h / (n_head / k.len())`. Returns
/// `(l, n_head × head_dim)`, the layout the output projection takes. Each task takes a block of
/// queries of one head: scores `Q·Kᵀ` by a small GEMM, the causal mask and softmax in place (with
/// a vectorisable `exp`), then `P·V` by a GEMM straight into the output.
pub fn attention(
    q: &[f32],
    l: usize,
    pos: usize,
    k: &[Vec<f32>],
    v: &[Vec<f32>],
    n_head: usize,
    head_dim: usize,
) -> Vec<f32> {
    let hd = head_dim;
    let n_rep = n_head / k.len().max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; l * n_head * hd];
    let per_task = 32;
    let blocks = l.div_ceil(per_task);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(n_head * blocks, |tasks| {
        let out_ptr = &out_ptr;
        let mut scores = Vec::new();
        for t in tasks {
            let (h, b) = (t / blocks, t % blocks);
            let (kh, vh) = (&k[h / n_rep], &v[h / n_rep]);
            let (i0, i1) = (b * per_task, ((b + 1) * per_task).min(l));
            let rows = i1 - i0;
            let keys = pos + i1; // the last query of the block sees this many
            scores.clear();
            scores.resize(rows * keys, 0f32);
            // SAFETY: the strides describe the slices' own row-major layouts: q block (rows × hd),
            // K as its transpose (hd × keys), scores (rows × keys).
            unsafe {
                gemm::gemm(
                    rows,
                    keys,
                    hd,
                    scores.as_mut_ptr(),
                    1,
                    keys as isize,
                    false,
                    q.as_ptr().add((h * l + i0) * hd),
                    1,
                    hd as isize,
                    kh.as_ptr(),
                    hd as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (r, row) in scores.chunks_exact_mut(keys).enumerate() {
                let visible = pos + i0 + r + 1;
                let (seen, masked) = row.split_at_mut(visible);
                let max = seen.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let inv = 1.0 / exp_shifted(seen, max);
                for x in seen.iter_mut() {
                    *x *= inv;
                }
                masked.fill(0.0);
            }
            // SAFETY: as above for P (rows × keys) and V (keys × hd); the output rows of queries
            // i0..i1 of head h (stride n_head × hd) are written by this task alone.
            unsafe {
                gemm::gemm(
                    rows,
                    hd,
                    keys,
                    out_ptr.0.add((i0 * n_head + h) * hd),
                    1,
                    (n_head * hd) as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    keys as isize,
                    vh.as_ptr(),
                    1,
                    hd as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
    });
    out
}

/// Replaces each `x` by `exp(x − max)` and returns their sum.
fn exp_shifted(xs: &mut [f32], max: f32) -> f32 {
    for x in xs.iter_mut() {
        *x = fast_exp(*x - max);
    }
    xs.iter().sum()
}

/// `exp(x)` for `x ≤ 0` to about 1e-5 relative error: `2^n · 2^f` with a degree-6 polynomial
/// for `2^f`, written so that the compiler vectorises it.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let t = x.max(-87.0) * std::f32::consts::LOG2_E;
    let n = t.floor();
    let f = t - n;
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5
                + f * (0.055_504_11
                    + f * (0.009_618_129 + f * (0.001_333_355_8 + f * 0.000_154_035_3)))));
    f32::from_bits(((n as i32 + 127) << 23) as u32) * p
}

#[cfg(test)]
mod attention_tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        for i in 0..=10_000 {
            let x = -(i as f32) * 0.0087;
            let (want, got) = (x.exp(), fast_exp(x));
            assert!(
                (want - got).abs() <= 2e-5 * want + 1e-30,
                "exp({x}) = {want}, got {got}"
            );
        }
    }

    #[test]
    fn attention_matches_naive_softmax() {
        let (n_head, n_kv, hd, pos, l) = (4, 2, 64, 5, 3);
        let t = pos + l;
        let mut seed = 3u64;
        let mut r = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let q: Vec<f32> = (0..n_head * l * hd).map(|_| r() * 4.0).collect();
        let k: Vec<Vec<f32>> = (0..n_kv)
            .map(|_| (0..t * hd).map(|_| r()).collect())
            .collect();
        let v: Vec<Vec<f32>> = (0..n_kv)
            .map(|_| (0..t * hd).map(|_| r()).collect())
            .collect();
        let got = attention(&q, l, pos, &k, &v, n_head, hd);
        for h in 0..n_head {
            let g = h / (n_head / n_kv);
            for i in 0..l {
                let qi = &q[(h * l + i) * hd..(h * l + i + 1) * hd];
                let keys = pos + i + 1;
                let s: Vec<f64> = (0..keys)
                    .map(|j| {
                        (0..hd)
                            .map(|d| (qi[d] * k[g][j * hd + d]) as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for d in 0..hd {
                    let want: f64 = (0..keys)
                        .map(|j| (s[j] - m).exp() / z * v[g][j * hd + d] as f64)
                        .sum();
                    let have = got[(i * n_head + h) * hd + d] as f64;
                    assert!(
                        (want - have).abs() < 1e-5,
                        "h{h} i{i} d{d}: {want} vs {have}"
                    );
                }
            }
        }
    }
}
