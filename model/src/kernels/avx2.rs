//! The 256-bit kernels, one body for three ways of dotting u8 codes with i8 activations (the
//! [`Dot`] implementations): AVX2's `vpmaddubsw` + `vpmaddwd`, and `vpdpbusd` on 8 lanes, VEX
//! (AVX-VNNI) or EVEX (AVX-512 VL). Also the decoding of every format with AVX2.
//!
//! Prefill: tiles of 16 weight rows (two registers of 8 lanes), four activation rows at a time.
//! Decoding: 8 rows at a time, each row's blocks decoded 32 at a time into a buffer that stays in
//! L1, then each block dotted and the 8 rows' lanes summed into 8
//! integers, in the order of the tiles and of [`super::dot_scalar`].

use super::{Format, Path, QActs, QWeight, SyncPtr, Tile, QK};
use std::arch::x86_64::*;

/// u8 weight codes × i8 activations, four products a 32-bit lane, added to `acc`: exactly
/// `Σ (u − CODE_OFFSET)·q` per lane. `prep` readies a weight register once for several dots.
trait Dot {
    const CODE_OFFSET: i32;
    type W: Copy;
    unsafe fn prep(w: __m256i) -> Self::W;
    unsafe fn dot(acc: __m256i, w: Self::W, x: __m256i) -> __m256i;
}

/// AVX2: pairs of u8×i8 products summed to i16 (saturating), then pairs of those to i32.
/// Exact for codes up to 128 (2·128·127 < 2¹⁵).
struct Avx2;
impl Dot for Avx2 {
    const CODE_OFFSET: i32 = 0;
    type W = __m256i;
    #[inline(always)]
    unsafe fn prep(w: __m256i) -> __m256i {
        w
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: callers run inside a function with the AVX2 feature.
        unsafe {
            let p = _mm256_maddubs_epi16(w, x);
            _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }
}

/// AVX2 for codes up to 255 (Q8_0): the code taken signed, `w = u − 128`, and multiplied as
/// `|w| · sign(q, w)`, whose pairs fit 16 bits (2·128·127).
struct Avx2Signed;
impl Dot for Avx2Signed {
    const CODE_OFFSET: i32 = 128;
    type W = (__m256i, __m256i);
    #[inline(always)]
    unsafe fn prep(w: __m256i) -> (__m256i, __m256i) {
        // SAFETY: callers run inside a function with the AVX2 feature.
        unsafe {
            let s = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
            (_mm256_abs_epi8(s), s)
        }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, (abs, s): (__m256i, __m256i), x: __m256i) -> __m256i {
        // SAFETY: as above.
        unsafe {
            let p = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(x, s));
            _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }
}

/// AVX-VNNI's `vpdpbusd` (VEX).
struct VnniVex;
impl Dot for VnniVex {
    const CODE_OFFSET: i32 = 0;
    type W = __m256i;
    #[inline(always)]
    unsafe fn prep(w: __m256i) -> __m256i {
        w
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: callers run inside a function with the AVX-VNNI feature.
        unsafe { _mm256_dpbusd_avx_epi32(acc, w, x) }
    }
}

/// AVX-512 VNNI's `vpdpbusd` on 256-bit registers (EVEX, AVX-512 VL).
struct VnniEvex;
impl Dot for VnniEvex {
    const CODE_OFFSET: i32 = 0;
    type W = __m256i;
    #[inline(always)]
    unsafe fn prep(w: __m256i) -> __m256i {
        w
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: callers run inside a function with the AVX-512 VNNI and VL features.
        unsafe { _mm256_dpbusd_epi32(acc, w, x) }
    }
}

/// The kernels of one [`Dot`], compiled with its CPU features.
trait Kernels {
    const CODE_OFFSET: i32;
    /// See [`gemv8`].
    unsafe fn gemv<const M: usize>(a: &Gemv, j: usize, rows: usize, buf: &mut RowBuf);
    /// See [`tile_dot`].
    unsafe fn tile<const MR: usize>(tile: &Tile, a: &Gemv, i0: usize, col0: usize);
}

macro_rules! kernels_for {
    ($dot:ty, $features:literal) => {
        impl Kernels for $dot {
            const CODE_OFFSET: i32 = <$dot as Dot>::CODE_OFFSET;
            #[inline(always)]
            unsafe fn gemv<const M: usize>(a: &Gemv, j: usize, rows: usize, buf: &mut RowBuf) {
                #[target_feature(enable = $features)]
                unsafe fn inner<const M: usize>(a: &Gemv, j: usize, rows: usize, buf: &mut RowBuf) {
                    // SAFETY: passed on from the caller.
                    unsafe { gemv8::<$dot, M>(a, j, rows, buf) }
                }
                // SAFETY: the caller checked the features and the bounds.
                unsafe { inner::<M>(a, j, rows, buf) }
            }
            #[inline(always)]
            unsafe fn tile<const MR: usize>(tile: &Tile, a: &Gemv, i0: usize, col0: usize) {
                #[target_feature(enable = $features)]
                unsafe fn inner<const MR: usize>(tile: &Tile, a: &Gemv, i0: usize, col0: usize) {
                    // SAFETY: passed on from the caller.
                    unsafe { tile_dot::<$dot, MR>(tile, a, i0, col0) }
                }
                // SAFETY: the caller checked the features and the bounds.
                unsafe { inner::<MR>(tile, a, i0, col0) }
            }
        }
    };
}

kernels_for!(Avx2, "avx2,fma,f16c");
kernels_for!(Avx2Signed, "avx2,fma,f16c");
kernels_for!(VnniVex, "avx2,fma,f16c,avxvnni");
kernels_for!(VnniEvex, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni");

/// What every task of one matmul shares.
struct Gemv<'a> {
    acts: &'a QActs,
    w: &'a QWeight,
    /// Per activation block, what the integer dot starts from: `−(c − CODE_OFFSET)·Σq`.
    corr: Vec<i32>,
    out: SyncPtr,
}

/// Blocks decoded at a time per row when decoding: 1,024 values (four Q4_K super-blocks), so
/// that each row is read in long runs (whole rows at the 0.5B's width of 896) and 8 rows'
/// codes (8 KiB) stay in L1. Measured on the 0.5B, `avx2`: see the README.
const CHUNK: usize = 32;

/// A task's buffers for [`gemv8`]: 8 rows' codes for one chunk of blocks (`[row][codes]`),
/// their scales and minimum terms as `[block][row]`, and one row's as it is decoded.
struct RowBuf {
    u: [u8; 8 * CHUNK * QK],
    a: [f32; CHUNK * 8],
    mn: [f32; CHUNK * 8],
    row_a: [f32; CHUNK],
    row_mn: [f32; CHUNK],
}

/// `out = acts · wᵀ` on a 256-bit path (or the 512-bit path's formats that [`super::avx512`]
/// does not decode). The caller checked that the CPU has `path` and the shapes (m ≥ 1).
pub(super) fn matmul(path: Path, acts: &QActs, w: &QWeight, out: &mut [f32]) {
    assert!(path.supported() && path != Path::Scalar);
    assert!(acts.m >= 1 && acts.k == w.k && out.len() == acts.m * w.n);
    match path {
        Path::Avx2 if w.format.max_code() > 128 => run::<Avx2Signed>(path, acts, w, out),
        Path::Avx2 => run::<Avx2>(path, acts, w, out),
        Path::AvxVnni if is_x86_feature_detected!("avxvnni") => run::<VnniVex>(path, acts, w, out),
        _ => run::<VnniEvex>(path, acts, w, out),
    }
}

fn run<K: Kernels>(path: Path, acts: &QActs, w: &QWeight, out: &mut [f32]) {
    let (m, n, k) = (acts.m, w.n, w.k);
    let g = Gemv {
        acts,
        w,
        corr: acts
            .qsum
            .iter()
            .map(|s| -(w.format.offset() - K::CODE_OFFSET) * s)
            .collect(),
        out: SyncPtr(out.as_mut_ptr()),
    };
    let pool = candle_core::utils::barrier_pool();
    if m < 4 {
        let rows_per_task = 64;
        pool.execute_chunked(n.div_ceil(rows_per_task), |tasks| {
            let mut buf = RowBuf {
                u: [0; 8 * CHUNK * QK],
                a: [0.0; CHUNK * 8],
                mn: [0.0; CHUNK * 8],
                row_a: [0.0; CHUNK],
                row_mn: [0.0; CHUNK],
            };
            for t in tasks {
                let end = ((t + 1) * rows_per_task).min(n);
                for j in (t * rows_per_task..end).step_by(8) {
                    let rows = (end - j).min(8);
                    // SAFETY: `matmul` checked the CPU features of K's path and the shapes;
                    // rows j..j + rows < n, and their columns of `out` are this task's.
                    unsafe {
                        match m {
                            1 => K::gemv::<1>(&g, j, rows, &mut buf),
                            2 => K::gemv::<2>(&g, j, rows, &mut buf),
                            _ => K::gemv::<3>(&g, j, rows, &mut buf),
                        }
                    }
                }
            }
        });
        return;
    }
    pool.execute_chunked(n.div_ceil(16), |tasks| {
        let mut tile = Tile::new(k, 8);
        for t in tasks {
            let rows = t * 16..((t + 1) * 16).min(n);
            tile.fill(path, w, rows.clone());
            let mut i = 0;
            while i < m {
                // SAFETY: as above; the kernel writes columns `rows` (this task's alone) of
                // activation rows i..i + 4, clamped to m.
                unsafe {
                    match m - i {
                        1 => K::tile::<1>(&tile, &g, i, rows.start),
                        2 => K::tile::<2>(&tile, &g, i, rows.start),
                        3 => K::tile::<3>(&tile, &g, i, rows.start),
                        _ => K::tile::<4>(&tile, &g, i, rows.start),
                    }
                }
                i += 4;
            }
        }
    });
}

/// Lane `r` of the result: the sum of `z[r]`'s 8 lanes.
#[inline(always)]
unsafe fn reduce8(z: &[__m256i; 8]) -> __m256i {
    // SAFETY: callers run inside a function with the AVX2 feature.
    unsafe {
        let t0 = _mm256_hadd_epi32(z[0], z[1]);
        let t1 = _mm256_hadd_epi32(z[2], z[3]);
        let t2 = _mm256_hadd_epi32(z[4], z[5]);
        let t3 = _mm256_hadd_epi32(z[6], z[7]);
        // Each 128-bit half: rows 0–3 (t0) or 4–7 (t2), one half of their lanes.
        let t0 = _mm256_hadd_epi32(t0, t1);
        let t2 = _mm256_hadd_epi32(t2, t3);
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(t0, t2),
            _mm256_permute2x128_si256::<0x31>(t0, t2),
        )
    }
}

/// Rows `j..j + rows` (`rows` ≤ 8, `j + rows` ≤ n) of the weights against the `M` (= m, < 4)
/// activation rows; writes `out[i·n + j + r]`.
#[inline(always)]
unsafe fn gemv8<D: Dot, const M: usize>(g: &Gemv, j: usize, rows: usize, buf: &mut RowBuf) {
    let (acts, w) = (g.acts, g.w);
    let (k, nb, n) = (w.k, w.k / QK, w.n);
    debug_assert!(acts.m == M && rows <= 8 && j + rows <= n);
    let has_min = w.format.has_min();
    // SAFETY: the caller runs this with D's features and AVX2/FMA/F16C. Loads: codes at
    // r·CHUNK·32 + b·32 + 32 ≤ 8·CHUNK·32, scales at b·8 + 8 ≤ CHUNK·8 (b < CHUNK);
    // activations at i·k + bb·32 + 32 ≤ m·k (bb < nb); `corr` and `d` at i·nb + bb.
    // Stores: out[i·n + j + r] for r < rows.
    unsafe {
        let mut f = [_mm256_setzero_ps(); M];
        for c in 0..nb.div_ceil(CHUNK) {
            let (b0, b1) = (c * CHUNK, (c * CHUNK + CHUNK).min(nb));
            let cb = b1 - b0;
            for r in 0..8 {
                let u = &mut buf.u[r * CHUNK * QK..(r + 1) * CHUNK * QK];
                if r < rows {
                    let row = w.row(j + r);
                    let bytes = &row[w.format.bytes_for(b0 * QK)..w.format.bytes_for(b1 * QK)];
                    expand_blocks(w.format, bytes, u, &mut buf.row_a, &mut buf.row_mn);
                    for b in 0..cb {
                        buf.a[b * 8 + r] = buf.row_a[b];
                        buf.mn[b * 8 + r] = buf.row_mn[b];
                    }
                } else {
                    // Rows past the end: zeros, never stored.
                    u[..cb * QK].fill(0);
                    for b in 0..cb {
                        buf.a[b * 8 + r] = 0.0;
                        buf.mn[b * 8 + r] = 0.0;
                    }
                }
            }
            for b in 0..cb {
                let bb = b0 + b;
                let mut qv = [_mm256_setzero_si256(); M];
                for (i, qv) in qv.iter_mut().enumerate() {
                    *qv = _mm256_loadu_si256(acts.q.as_ptr().add(i * k + bb * QK) as *const _);
                }
                let mut z = [[_mm256_setzero_si256(); 8]; M];
                for r in 0..8 {
                    let wv = _mm256_loadu_si256(buf.u.as_ptr().add(r * CHUNK * QK + b * QK) as _);
                    let wv = D::prep(wv);
                    for (z, qv) in z.iter_mut().zip(&qv) {
                        z[r] = D::dot(_mm256_setzero_si256(), wv, *qv);
                    }
                }
                let av = _mm256_loadu_ps(buf.a.as_ptr().add(b * 8));
                let mv = _mm256_loadu_ps(buf.mn.as_ptr().add(b * 8));
                for i in 0..M {
                    let s = _mm256_add_epi32(
                        reduce8(&z[i]),
                        _mm256_set1_epi32(*g.corr.get_unchecked(i * nb + bb)),
                    );
                    let d = _mm256_set1_ps(*acts.d.get_unchecked(i * nb + bb));
                    f[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(av, d), f[i]);
                    if has_min {
                        let qs = _mm256_set1_ps(*acts.qsum.get_unchecked(i * nb + bb) as f32);
                        f[i] = _mm256_fmadd_ps(qs, _mm256_mul_ps(mv, d), f[i]);
                    }
                }
            }
        }
        let mut lanes = [0f32; 8];
        for (i, f) in f.into_iter().enumerate() {
            _mm256_storeu_ps(lanes.as_mut_ptr(), f);
            let o = g.out.0.add(i * n + j);
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), o, rows);
        }
    }
}

/// The tile's rows against activation rows `i0..i0 + MR` (≤ m), written to columns `col0..` of
/// `out`: per block and group of 4 codes, two loads of weights meet `MR` broadcast activation
/// groups in `2·MR` dots.
#[inline(always)]
unsafe fn tile_dot<D: Dot, const MR: usize>(tile: &Tile, g: &Gemv, i0: usize, col0: usize) {
    let acts = g.acts;
    let (k, nb, n) = (tile.k, tile.k / QK, g.w.n);
    debug_assert!(tile.lanes == 8 && i0 + MR <= acts.m && col0 + tile.rows <= n);
    let has_min = g.w.format.has_min();
    // SAFETY: the caller runs this with D's features and AVX2/FMA/F16C. The tile holds
    // nb·8·64 code bytes and nb·16 scales; activations are m × k with i0 + MR ≤ m; stores go to
    // out[(i0 + r)·n + col0 + l] for l < tile.rows.
    unsafe {
        let u = tile.u.as_ptr();
        let (a, mn) = (tile.a.as_ptr(), tile.mn.as_ptr());
        let mut q = [acts.q.as_ptr(); MR];
        for (r, q) in q.iter_mut().enumerate() {
            *q = acts.q.as_ptr().add((i0 + r) * k);
        }
        let mut f0 = [_mm256_setzero_ps(); MR];
        let mut f1 = [_mm256_setzero_ps(); MR];
        for b in 0..nb {
            let mut s0 = [_mm256_setzero_si256(); MR];
            for (r, s) in s0.iter_mut().enumerate() {
                *s = _mm256_set1_epi32(*g.corr.get_unchecked((i0 + r) * nb + b));
            }
            let mut s1 = s0;
            let ub = u.add(b * 8 * 64);
            for gi in 0..8 {
                let w0 = D::prep(_mm256_loadu_si256(ub.add(gi * 64) as *const _));
                let w1 = D::prep(_mm256_loadu_si256(ub.add(gi * 64 + 32) as *const _));
                for r in 0..MR {
                    let x = (q[r].add(b * QK + gi * 4) as *const i32).read_unaligned();
                    let x = _mm256_set1_epi32(x);
                    s0[r] = D::dot(s0[r], w0, x);
                    s1[r] = D::dot(s1[r], w1, x);
                }
            }
            let (a0, a1) = (
                _mm256_loadu_ps(a.add(b * 16)),
                _mm256_loadu_ps(a.add(b * 16 + 8)),
            );
            for r in 0..MR {
                let d = _mm256_set1_ps(*acts.d.get_unchecked((i0 + r) * nb + b));
                f0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0[r]), _mm256_mul_ps(a0, d), f0[r]);
                f1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1[r]), _mm256_mul_ps(a1, d), f1[r]);
            }
            if has_min {
                let m0 = _mm256_loadu_ps(mn.add(b * 16));
                let m1 = _mm256_loadu_ps(mn.add(b * 16 + 8));
                for r in 0..MR {
                    let i = (i0 + r) * nb + b;
                    let d = _mm256_set1_ps(*acts.d.get_unchecked(i));
                    let qs = _mm256_set1_ps(*acts.qsum.get_unchecked(i) as f32);
                    f0[r] = _mm256_fmadd_ps(qs, _mm256_mul_ps(m0, d), f0[r]);
                    f1[r] = _mm256_fmadd_ps(qs, _mm256_mul_ps(m1, d), f1[r]);
                }
            }
        }
        let mut lanes = [0f32; 16];
        for r in 0..MR {
            _mm256_storeu_ps(lanes.as_mut_ptr(), f0[r]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), f1[r]);
            let o = g.out.0.add((i0 + r) * n + col0);
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), o, tile.rows);
        }
    }
}

/// Decodes whole stored blocks of `format` with AVX2 (see [`super::expand`], which checks the
/// buffers' sizes). The caller checked that the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn expand_row(
    format: Format,
    bytes: &[u8],
    u: &mut [u8],
    a: &mut [f32],
    mn: &mut [f32],
) {
    // SAFETY: passed on from the caller.
    unsafe { expand_blocks(format, bytes, u, a, mn) }
}

/// A block's f16 scale as f32 (exact, like `half`'s conversion).
#[inline(always)]
unsafe fn block_scale(blk: *const u8) -> f32 {
    // SAFETY: callers run with F16C and pass a pointer to 2 readable bytes.
    unsafe {
        let bits = (blk as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }
}

/// Byte `i` of the result is 0xff where bit `i` of `x` is set, else 0.
#[inline(always)]
unsafe fn bytes_from_bits(x: u32) -> __m256i {
    // SAFETY: callers run with AVX2.
    unsafe {
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let v = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
        let v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
        _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1))
    }
}

/// [`super::q4k_scales`] with AVX2: the 12 bytes of 6-bit scales and minimums unpacked into 8
/// scale bytes and 8 minimum bytes (as ggml's dot products unpack them), then widened and
/// multiplied by `d` and `dmin` 8 at a time. Writes `a[0..8]` and `mn[0..8]`.
#[inline(always)]
unsafe fn q4k_scales(blk: &[u8], a: *mut f32, mn: *mut f32) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([blk[4 + i], blk[5 + i], blk[6 + i], blk[7 + i]]);
    let (w0, w1, w2) = (w(0), w(4), w(8));
    // Scales 0–3 and 4–7, then minimums 0–3 and 4–7, one byte each.
    let sc = [
        w0 & LOW6,
        (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4),
        w1 & LOW6,
        ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4),
    ];
    let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
    let dmin = half::f16::from_le_bytes([blk[2], blk[3]]).to_f32();
    // SAFETY: callers run with AVX2 and pass room for 8 values at `a` and at `mn`.
    unsafe {
        let v = _mm_loadu_si128(sc.as_ptr() as *const __m128i);
        let s = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
        let m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(v)));
        _mm256_storeu_ps(a, _mm256_mul_ps(_mm256_set1_ps(d), s));
        let m = _mm256_mul_ps(_mm256_set1_ps(dmin), m);
        _mm256_storeu_ps(mn, _mm256_xor_ps(m, _mm256_set1_ps(-0.0)));
    }
}

#[inline(always)]
unsafe fn expand_blocks(format: Format, bytes: &[u8], u: &mut [u8], a: &mut [f32], mn: &mut [f32]) {
    let bb = format.block_bytes();
    let blocks = bytes.len() / bb;
    debug_assert!(u.len() >= blocks * format.block_elems());
    // SAFETY: callers run with AVX2 and F16C; `bytes` holds `blocks` whole blocks, and `u`, `a`
    // (and `mn` for Q4_K) hold their codes and scales (checked by `super::expand`, or sized by
    // `gemv8`'s buffers for one chunk of blocks).
    unsafe {
        let low = _mm256_set1_epi8(0x0f);
        let out = u.as_mut_ptr() as *mut __m256i;
        for s in 0..blocks {
            let blk = bytes.as_ptr().add(s * bb);
            match format {
                Format::Q4_0 | Format::Q5_0 => {
                    *a.get_unchecked_mut(s) = block_scale(blk);
                    let qs_at = if format == Format::Q4_0 { 2 } else { 6 };
                    let qs = _mm_loadu_si128(blk.add(qs_at) as *const __m128i);
                    let lo = _mm_and_si128(qs, _mm256_castsi256_si128(low));
                    let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm256_castsi256_si128(low));
                    let mut v = _mm256_set_m128i(hi, lo);
                    if format == Format::Q5_0 {
                        let qh = (blk.add(2) as *const u32).read_unaligned();
                        let fifth = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
                        v = _mm256_or_si256(v, fifth);
                    }
                    _mm256_storeu_si256(out.add(s), v);
                }
                Format::Q8_0 => {
                    *a.get_unchecked_mut(s) = block_scale(blk);
                    let v = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                    _mm256_storeu_si256(out.add(s), _mm256_xor_si256(v, _mm256_set1_epi8(-128)));
                }
                Format::Q4K => {
                    let blk = std::slice::from_raw_parts(blk, bb);
                    q4k_scales(blk, a.as_mut_ptr().add(s * 8), mn.as_mut_ptr().add(s * 8));
                    for c in 0..4 {
                        let q = _mm256_loadu_si256(blk.as_ptr().add(16 + 32 * c) as *const _);
                        let lo = _mm256_and_si256(q, low);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                        _mm256_storeu_si256(out.add(s * 8 + 2 * c), lo);
                        _mm256_storeu_si256(out.add(s * 8 + 2 * c + 1), hi);
                    }
                }
            }
        }
    }
}
