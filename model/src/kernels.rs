//! Quantized weights × activations on the CPU, where candle is slow.
//!
//! candle 0.11 multiplies Q5_0 weights (most of Qwen2.5-Coder-0.5B's "Q4_K_M" file) with a scalar
//! loop, and runs a prompt of `m` tokens as `m` separate passes over every weight. Here a tile of
//! 32 weight rows is decoded once into unsigned 8-bit codes, laid out so that each 32-bit lane of
//! a register belongs to one weight row, and then dotted with every activation row while it sits
//! in cache, four activation rows at a time, with AVX-512 VNNI (`vpdpbusd`: 64 u8×i8 products per
//! instruction). A block's dot thus ends as one whole integer per row, and the float work (scale,
//! convert, accumulate) is 3 instructions per 8 VNNI dots. Q8_0 goes the same way, and so do the
//! model's Q6_K tensors, requantized to Q8_0 at load (see `transformer.rs`). Q4_K stays with
//! candle, whose kernels for it were measured faster than this approach.
//!
//! The maths: a weight block is `x = a·(u − c)` with `u` unsigned (Q5_0: `u = x/a + 16`, 0..31;
//! Q8_0: `u = x/a + 128`), activations are quantized per 32-block as `y = d·q` (`q` i8). So
//! `Σ x·y = a·d·(Σ u·q − c·Σq)`: one exact integer per block, then `acc = fma(that, a·d, acc)`
//! block after block ([`dot_scalar`] is that order, written plainly).
//!
//! Decoding (fewer than 4 activation rows) decodes 16 rows' blocks in registers instead of
//! through a tile and sums each row's lanes into the same integers: one row or a batch give
//! bit-identical results, which speculative decoding and prompt-cache reuse rely on.
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

    /// The unsigned codes' offset: `u = x/a + offset`.
    fn offset(self) -> i32 {
        match self {
            Format::Q5_0 => 16,
            Format::Q8_0 => 128,
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

    /// Row `j`'s stored blocks.
    fn row(&self, j: usize) -> &[u8] {
        let row_bytes = self.k / QK * self.format.block_bytes();
        &self.data[j * row_bytes..(j + 1) * row_bytes]
    }

    /// Decodes row `j` into unsigned codes `u` (k bytes) and block scales `a` (k/32).
    pub fn expand_row(&self, j: usize, u: &mut [u8], a: &mut [f32]) {
        let row = self.row(j);
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
    /// `Σq` per block, `m × k/32`: with a weight format's offset it corrects the unsigned codes.
    pub qsum: Vec<i32>,
}

/// Quantizes `m` rows of `k` activations (round half away from zero, as ggml does).
pub fn quantize_acts(x: &[f32], m: usize, k: usize) -> QActs {
    let nb = k / QK;
    let mut q = vec![0i8; m * k];
    let mut d = vec![0f32; m * nb];
    let mut qsum = vec![0i32; m * nb];
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
        qsum[i] = sum;
    }
    QActs { m, k, q, d, qsum }
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

/// One weight row (codes `u`, scales `a`) against one activation row, in the order every path
/// here follows, so that all of them agree bit for bit: per block an exact integer dot
/// `Σ u·q − c·Σq`, then `acc = fma(dot, a·d, acc)` block after block.
pub fn dot_scalar(u: &[u8], a: &[f32], offset: i32, q: &[i8], d: &[f32], qsum: &[i32]) -> f32 {
    let mut acc = 0f32;
    for b in 0..a.len() {
        let mut s = -offset * qsum[b];
        for j in b * QK..(b + 1) * QK {
            s += u[j] as i32 * q[j] as i32;
        }
        acc = (s as f32).mul_add(a[b] * d[b], acc);
    }
    acc
}

/// Weight rows per prefill tile: two registers of 16 lanes, one lane per row.
const TILE_ROWS: usize = 32;

/// A tile of decoded weight rows laid out for the prefill kernel, kept in L2 while every
/// activation row passes by. Lane `r` of a register is weight row `r`: per block and group of 4
/// codes, 2 × 64 bytes (rows 0–15, then 16–31, 4 codes each), so one broadcast activation group
/// meets 32 rows in two VNNI dots and a block's dots end as whole integers, one per row.
struct Tile {
    k: usize,
    rows: usize,
    /// Codes, `[block][group of 4][half][row][4]`.
    u: Vec<u8>,
    /// Scales, `[block][half][row]`.
    a: Vec<f32>,
    row_u: Vec<u8>,
    row_a: Vec<f32>,
}

impl Tile {
    fn new(k: usize) -> Self {
        Self {
            k,
            rows: 0,
            u: vec![0; TILE_ROWS * k],
            a: vec![0.0; TILE_ROWS * k / QK],
            row_u: vec![0; k],
            row_a: vec![0.0; k / QK],
        }
    }

    fn fill(&mut self, w: &QWeight, rows: std::ops::Range<usize>) {
        if rows.len() < TILE_ROWS {
            // Rows past the end contribute zeros (and are never stored).
            self.u.fill(0);
            self.a.fill(0.0);
        }
        self.rows = rows.len();
        for (r, j) in rows.enumerate() {
            w.expand_row(j, &mut self.row_u, &mut self.row_a);
            let (half, lane) = (r / 16, r % 16);
            for (b, &scale) in self.row_a.iter().enumerate() {
                self.a[(b * 2 + half) * 16 + lane] = scale;
                for g in 0..QK / 4 {
                    let dst = ((b * 8 + g) * 2 + half) * 64 + lane * 4;
                    let src = b * QK + g * 4;
                    self.u[dst..dst + 4].copy_from_slice(&self.row_u[src..src + 4]);
                }
            }
        }
    }
}

struct SyncPtr(*mut f32);
// SAFETY: tasks write disjoint columns through it (see `matmul_quantized`).
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
    let (n, k, nb) = (w.n, w.k, w.k / QK);
    // The unsigned codes' offset, taken off each block's integer dot.
    let corr: Vec<i32> = acts.qsum.iter().map(|s| -w.format.offset() * s).collect();
    #[cfg(target_arch = "x86_64")]
    if available() {
        let out_ptr = SyncPtr(out.as_mut_ptr());
        let pool = candle_core::utils::barrier_pool();
        if m < 4 {
            // Decoding: nothing to share a decoded row with, so decode 16 rows' blocks in
            // registers and dot them at once, in the order the tiles use.
            let rows_per_task = 64;
            pool.execute_chunked(n.div_ceil(rows_per_task), |tasks| {
                let out_ptr = &out_ptr;
                for t in tasks {
                    let end = ((t + 1) * rows_per_task).min(n);
                    for j in (t * rows_per_task..end).step_by(16) {
                        // SAFETY: `available` checked the CPU features; columns j.. are this
                        // task's, and the call reads rows j..j + 16 (clamped to n) of w.
                        unsafe {
                            let (rows, o) = ((end - j).min(16), out_ptr.0);
                            match m {
                                1 => x86::gemv16::<1>(w, j, rows, acts, &corr, o),
                                2 => x86::gemv16::<2>(w, j, rows, acts, &corr, o),
                                _ => x86::gemv16::<3>(w, j, rows, acts, &corr, o),
                            }
                        }
                    }
                }
            });
            return;
        }
        // Each task owns a tile of 32 weight rows: decode them once, dot them with every
        // activation row, four at a time. The tasks run on candle's own worker threads, so the
        // two never compete for the cores.
        pool.execute_chunked(n.div_ceil(TILE_ROWS), |tasks| {
            let out_ptr = &out_ptr;
            let mut tile = Tile::new(k);
            for t in tasks {
                let rows = t * TILE_ROWS..((t + 1) * TILE_ROWS).min(n);
                tile.fill(w, rows.clone());
                let mut i = 0;
                while i < m {
                    // SAFETY: `available` checked the CPU features; the kernel writes columns
                    // `rows` (this task's alone) of activation rows i..i + 4 (< m).
                    unsafe {
                        let (o, c) = (out_ptr.0, rows.start);
                        match m - i {
                            1 => x86::tile_dot::<1>(&tile, acts, &corr, i, o, n, c),
                            2 => x86::tile_dot::<2>(&tile, acts, &corr, i, o, n, c),
                            3 => x86::tile_dot::<3>(&tile, acts, &corr, i, o, n, c),
                            _ => x86::tile_dot::<4>(&tile, acts, &corr, i, o, n, c),
                        }
                    }
                    i += 4;
                }
            }
        });
        return;
    }
    let (mut u, mut a) = (vec![0u8; k], vec![0f32; nb]);
    for j in 0..n {
        w.expand_row(j, &mut u, &mut a);
        for i in 0..m {
            out[i * n + j] = dot_scalar(
                &u,
                &a,
                w.format.offset(),
                &acts.q[i * k..(i + 1) * k],
                &acts.d[i * nb..(i + 1) * nb],
                &acts.qsum[i * nb..(i + 1) * nb],
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Format, QActs, QWeight, Tile, QK};
    use std::arch::x86_64::*;

    /// One block's unsigned codes, in a register.
    #[inline(always)]
    unsafe fn block_codes(format: Format, blk: *const u8) -> __m256i {
        match format {
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
        }
    }

    /// Two rows' blocks decoded side by side: `lo`'s codes in the low 256 bits, `hi`'s in the
    /// high ones (what [`block_codes`] gives for each, decoded with half the instructions).
    #[inline(always)]
    unsafe fn block_codes2(format: Format, lo: *const u8, hi: *const u8) -> __m512i {
        match format {
            Format::Q5_0 => {
                // Each row's 16 bytes of nibbles twice: low nibbles in the first copy, high
                // ones (shifted down by 4) in the second; then the fifth bits from `qh`.
                let qs = _mm512_broadcast_i32x4(_mm_loadu_si128(lo.add(6) as *const __m128i));
                let qs = _mm512_mask_broadcast_i32x4(
                    qs,
                    0xff00,
                    _mm_loadu_si128(hi.add(6) as *const __m128i),
                );
                const FOURS: i64 = 0x0004_0004_0004_0004; // a shift of 4 in each 16-bit lane
                let shift = _mm512_set_epi64(FOURS, FOURS, 0, 0, FOURS, FOURS, 0, 0);
                let v = _mm512_and_si512(_mm512_srlv_epi16(qs, shift), _mm512_set1_epi8(0x0f));
                let qh_lo = (lo.add(2) as *const u32).read_unaligned() as u64;
                let qh_hi = (hi.add(2) as *const u32).read_unaligned() as u64;
                _mm512_mask_add_epi8(v, qh_lo | qh_hi << 32, v, _mm512_set1_epi8(0x10))
            }
            Format::Q8_0 => {
                let v = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(lo.add(2) as *const __m256i)),
                    _mm256_loadu_si256(hi.add(2) as *const __m256i),
                );
                _mm512_xor_si512(v, _mm512_set1_epi8(-128))
            }
        }
    }

    /// A block's f16 scale as f32 (exact, like `half`'s conversion).
    #[inline(always)]
    unsafe fn block_scale(blk: *const u8) -> f32 {
        let bits = (blk as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub unsafe fn expand_row(format: Format, row: &[u8], u: &mut [u8], a: &mut [f32]) {
        let bb = format.block_bytes();
        let nb = row.len() / bb;
        debug_assert!(u.len() >= nb * QK && a.len() >= nb);
        for b in 0..nb {
            let blk = row.as_ptr().add(b * bb);
            *a.get_unchecked_mut(b) = block_scale(blk);
            let v = block_codes(format, blk);
            _mm256_storeu_si256(u.as_mut_ptr().add(b * QK) as *mut __m256i, v);
        }
    }

    /// Sixteen registers' worth of lane sums: `z[p]` holds two rows' 8-lane block dots (rows
    /// `LO[p]` and `LO[p] + 4`); the result holds row `r`'s whole dot in lane `r`.
    #[inline(always)]
    unsafe fn lane_sums(z: &[__m512i; 8]) -> __m512i {
        let pair =
            |x, y| _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y));
        let quad =
            |x, y| _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y));
        let u0 = quad(pair(z[0], z[1]), pair(z[2], z[3]));
        let u1 = quad(pair(z[4], z[5]), pair(z[6], z[7]));
        // Each 128-bit lane of u0/u1 now holds 4 rows' half dots: add the halves.
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0x88>(u0, u1),
            _mm512_shuffle_i32x4::<0xdd>(u0, u1),
        )
    }

    /// A store mask for the first `rows` of 16 lanes.
    fn lanes(rows: usize) -> __mmask16 {
        if rows >= 16 {
            0xffff
        } else {
            (1 << rows) - 1
        }
    }

    /// Which row each register of [`lane_sums`] carries in its low half.
    const LO: [usize; 8] = [0, 1, 2, 3, 8, 9, 10, 11];

    /// Rows `j..j + rows` (`rows` ≤ 16) of `w` against the `M` (= `acts.m`, < 4) activation
    /// rows, decoding each block in registers; writes `out[i·n + j + r]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
    pub unsafe fn gemv16<const M: usize>(
        w: &QWeight,
        j: usize,
        rows: usize,
        acts: &QActs,
        corr: &[i32],
        out: *mut f32,
    ) {
        let (k, nb, n) = (w.k, w.k / QK, w.n);
        let bb = w.format.block_bytes();
        let row_bytes = nb * bb;
        let base = w.data.as_ptr().add(j * row_bytes);
        // Rows past the end read row j again; their lanes are never stored.
        let mut offs = [0i32; 16];
        let mut rp = [base; 16];
        for r in 0..rows {
            offs[r] = (r * row_bytes) as i32;
            rp[r] = base.add(r * row_bytes);
        }
        let offs = _mm512_loadu_si512(offs.as_ptr() as *const _);
        let mut f = [_mm512_setzero_ps(); M];
        for b in 0..nb {
            let mut qv = [_mm512_setzero_si512(); M];
            for (i, qv) in qv.iter_mut().enumerate() {
                let q = acts.q.as_ptr().add(i * k + b * QK);
                *qv = _mm512_broadcast_i64x4(_mm256_loadu_si256(q as *const __m256i));
            }
            let mut z = [[_mm512_setzero_si512(); 8]; M];
            for p in 0..8 {
                let wv = block_codes2(w.format, rp[LO[p]].add(b * bb), rp[LO[p] + 4].add(b * bb));
                for i in 0..M {
                    z[i][p] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, qv[i]);
                }
            }
            let idx = _mm512_add_epi32(offs, _mm512_set1_epi32((b * bb) as i32));
            let bits = _mm512_i32gather_epi32::<1>(idx, base as *const _);
            let a = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(bits));
            for i in 0..M {
                let s = _mm512_add_epi32(
                    lane_sums(&z[i]),
                    _mm512_set1_epi32(*corr.get_unchecked(i * nb + b)),
                );
                let scale = _mm512_mul_ps(a, _mm512_set1_ps(*acts.d.get_unchecked(i * nb + b)));
                f[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, f[i]);
            }
        }
        for (i, f) in f.into_iter().enumerate() {
            _mm512_mask_storeu_ps(out.add(i * n + j), lanes(rows), f);
        }
    }

    /// The tile's rows against activation rows `i0..i0 + MR`, written to columns `col0..` of
    /// `out` (`n` wide): per block and group of 4 codes, two loads of weights meet `MR`
    /// broadcast activation groups in `2·MR` VNNI dots.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn tile_dot<const MR: usize>(
        tile: &Tile,
        acts: &QActs,
        corr: &[i32],
        i0: usize,
        out: *mut f32,
        n: usize,
        col0: usize,
    ) {
        let (k, nb) = (tile.k, tile.k / QK);
        let u = tile.u.as_ptr();
        let a = tile.a.as_ptr();
        let mut q = [acts.q.as_ptr(); MR];
        for (r, q) in q.iter_mut().enumerate() {
            *q = acts.q.as_ptr().add((i0 + r) * k);
        }
        let mut f0 = [_mm512_setzero_ps(); MR];
        let mut f1 = [_mm512_setzero_ps(); MR];
        for b in 0..nb {
            let mut s0 = [_mm512_setzero_si512(); MR];
            for (r, s) in s0.iter_mut().enumerate() {
                *s = _mm512_set1_epi32(*corr.get_unchecked((i0 + r) * nb + b));
            }
            let mut s1 = s0;
            let ub = u.add(b * 8 * 128);
            for g in 0..8 {
                let w0 = _mm512_loadu_si512(ub.add(g * 128) as *const _);
                let w1 = _mm512_loadu_si512(ub.add(g * 128 + 64) as *const _);
                for r in 0..MR {
                    let x = (q[r].add(b * QK + g * 4) as *const i32).read_unaligned();
                    let x = _mm512_set1_epi32(x);
                    s0[r] = _mm512_dpbusd_epi32(s0[r], w0, x);
                    s1[r] = _mm512_dpbusd_epi32(s1[r], w1, x);
                }
            }
            let a0 = _mm512_loadu_ps(a.add(b * 32));
            let a1 = _mm512_loadu_ps(a.add(b * 32 + 16));
            for r in 0..MR {
                let d = _mm512_set1_ps(*acts.d.get_unchecked((i0 + r) * nb + b));
                f0[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0[r]), _mm512_mul_ps(a0, d), f0[r]);
                f1[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1[r]), _mm512_mul_ps(a1, d), f1[r]);
            }
        }
        let (m0, m1) = (lanes(tile.rows), lanes(tile.rows.saturating_sub(16)));
        for r in 0..MR {
            let o = out.add((i0 + r) * n + col0);
            _mm512_mask_storeu_ps(o, m0, f0[r]);
            _mm512_mask_storeu_ps(o.add(16), m1, f1[r]);
        }
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

    /// Random `n × k` weights quantized to `format`, and `m` rows of random activations.
    fn random_case(format: Format, n: usize, k: usize, m: usize) -> (QWeight, Vec<f32>) {
        let dev = Device::Cpu;
        let dtype = match format {
            Format::Q5_0 => GgmlDType::Q5_0,
            Format::Q8_0 => GgmlDType::Q8_0,
        };
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let ours = QWeight::new(format, n, k, q.data().unwrap().into_owned()).unwrap();
        let xs = Tensor::randn(0f32, 1.0, (m, k), &dev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        (ours, xs)
    }

    #[test]
    fn one_row_at_a_time_is_bit_identical_to_a_batch() {
        for format in [Format::Q5_0, Format::Q8_0] {
            let (n, k, m) = (37, 96, 6);
            let (ours, xs) = random_case(format, n, k, m);
            let mut batch = vec![0f32; m * n];
            matmul(&xs, m, &ours, &mut batch);
            for i in 0..m {
                let mut one = vec![0f32; n];
                matmul(&xs[i * k..(i + 1) * k], 1, &ours, &mut one);
                assert_eq!(one, batch[i * n..(i + 1) * n], "{format:?} row {i}");
            }
        }
    }

    /// Every path (the decoding one below 4 rows, the tiles from 4 on, the portable one) does the
    /// same arithmetic in the same order, so they agree bit for bit, also on partial tiles.
    #[test]
    fn simd_paths_equal_the_scalar_order() {
        for format in [Format::Q5_0, Format::Q8_0] {
            for (n, k, m) in [(45, 128, 1), (45, 128, 3), (70, 96, 9), (32, 896, 4)] {
                let (ours, xs) = random_case(format, n, k, m);
                let mut got = vec![0f32; m * n];
                matmul(&xs, m, &ours, &mut got);
                let acts = quantize_acts(&xs, m, k);
                let nb = k / QK;
                let (mut u, mut a) = (vec![0u8; k], vec![0f32; nb]);
                for j in 0..n {
                    expand_row_scalar(format, ours.row(j), &mut u, &mut a);
                    for i in 0..m {
                        let want = dot_scalar(
                            &u,
                            &a,
                            format.offset(),
                            &acts.q[i * k..(i + 1) * k],
                            &acts.d[i * nb..(i + 1) * nb],
                            &acts.qsum[i * nb..(i + 1) * nb],
                        );
                        let v = got[i * n + j];
                        assert_eq!(
                            v.to_bits(),
                            want.to_bits(),
                            "{format:?} n={n} m={m} ({i}, {j})"
                        );
                    }
                }
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
/// queries of one head, and each query alone over exactly the keys it sees: scores `q·Kᵀ` by the
/// `gemm` crate, softmax in place (with a vectorisable `exp`), then `p·V`. Batching the queries
/// into one GEMM was 12–20% faster in prefill, but its rounding depended on which queries shared
/// the pass, so a reused cache could change a greedy completion (1 in 207 HumanEval tasks did).
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
            // One query at a time, over exactly the keys it sees: its arithmetic is then the
            // same whichever queries share its pass, so a prompt prefilled in other pieces (a
            // reused cache, a checked draft) gives bit-identical attention.
            for i in b * per_task..((b + 1) * per_task).min(l) {
                let keys = pos + i + 1;
                scores.clear();
                scores.resize(keys, 0f32);
                // SAFETY: the strides describe the slices' own row-major layouts: the query
                // (1 × hd), K as its transpose (hd × keys), the scores (1 × keys).
                unsafe {
                    gemm::gemm(
                        1,
                        keys,
                        hd,
                        scores.as_mut_ptr(),
                        1,
                        keys as isize,
                        false,
                        q.as_ptr().add((h * l + i) * hd),
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
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let inv = 1.0 / exp_shifted(&mut scores, max);
                for x in scores.iter_mut() {
                    *x *= inv;
                }
                // SAFETY: as above for P (1 × keys) and V (keys × hd); output row i of head h
                // (stride n_head × hd) is written by this task alone.
                unsafe {
                    gemm::gemm(
                        1,
                        hd,
                        keys,
                        out_ptr.0.add((i * n_head + h) * hd),
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

    /// A query's attention is the same bit for bit whichever queries share its pass: all 40 at
    /// once, or the prompt in two pieces with the cache between them (what reusing a cache or
    /// checking a speculative draft does), or one at a time as in decoding.
    #[test]
    fn attention_does_not_depend_on_how_the_prompt_is_split() {
        let (n_head, hd, pos, l) = (4usize, 64usize, 70usize, 40usize);
        let t = pos + l;
        let f = |i: usize| (i * 7919 % 1000) as f32 / 1000.0 - 0.5;
        let q: Vec<f32> = (0..n_head * l * hd).map(|i| f(i * 3 + 1)).collect();
        let k: Vec<Vec<f32>> = (0..2)
            .map(|g| (0..t * hd).map(|i| f(i * 5 + g)).collect())
            .collect();
        let v: Vec<Vec<f32>> = (0..2)
            .map(|g| (0..t * hd).map(|i| f(i * 11 + g)).collect())
            .collect();
        let all = attention(&q, l, pos, &k, &v, n_head, hd);
        // Queries a..b alone, over the cache as it stands after query b - 1.
        let piece = |a: usize, b: usize| {
            let qp: Vec<f32> = (0..n_head)
                .flat_map(|h| q[(h * l + a) * hd..(h * l + b) * hd].to_vec())
                .collect();
            let cut = |x: &Vec<Vec<f32>>| -> Vec<Vec<f32>> {
                x.iter().map(|g| g[..(pos + b) * hd].to_vec()).collect()
            };
            attention(&qp, b - a, pos + a, &cut(&k), &cut(&v), n_head, hd)
        };
        let row = |i: usize| &all[i * n_head * hd..(i + 1) * n_head * hd];
        let split = [piece(0, 13), piece(13, l)].concat();
        assert!(split == all, "two pieces differ from one pass");
        for i in [0, 1, 31, 32, l - 1] {
            assert!(piece(i, i + 1) == row(i), "query {i} alone differs");
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
