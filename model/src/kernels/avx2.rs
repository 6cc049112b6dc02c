//! The 256-bit kernels, one body for three ways of dotting u8 codes with i8 activations (the
//! [`Dot`] implementations): AVX2's `vpmaddubsw` + `vpmaddwd`, and `vpdpbusd` on 8 lanes, VEX
//! (AVX-VNNI) or EVEX (AVX-512 VL). Also the decoding of every format's panels with AVX2.
//!
//! A panel's block decodes to 8 registers whose lane `r` holds row `r`'s 4 codes of one group
//! (see [`super::QWeight`]), so a block's 8 dots leave each row's integer in its own lane: no
//! horizontal sums. Decoding (fewer than 4 activation rows) runs straight from the panels;
//! prefill decodes a tile of 16 rows (two panels) once and dots it with four activation rows at
//! a time. Either way the order is [`super::dot_scalar`]'s.

use super::{Format, Path, QActs, QWeight, SyncPtr, Tile, PANEL, QK};
use std::arch::x86_64::*;

/// How far ahead of the block being read a matrix-vector product asks for weights, in bytes,
/// and into which cache (L2). Decoding streams every weight from memory once a token, and one
/// core alone keeps too few reads in flight for the memory's bandwidth: these hints add the
/// next ones early, and into L2 they do not take L1's few fill buffers. Measured on an Intel
/// Xeon (2026-12-06, `nib bench --prompt-tokens 8 --gen-tokens 96`, 2 threads, medians of 3):
/// 1.5B decode 15.3 tok/s without hints, 17.9 with L1 hints 768 bytes ahead, 19.5 with L2
/// hints 3,072 bytes ahead (1,536–9,216 within noise); the 0.5B 45.4 (L1, 768) → 52.3. Prefill,
/// which reads each weight once per 4 activation rows, lost 3% with them and goes without.
pub(crate) const PREFETCH_BYTES: usize = 3072;

/// Stored block `i` (of `bb` bytes) of the panel at `pb`; with `prefetch`, the `bb` bytes that
/// lie [`PREFETCH_BYTES`] after it are asked into L2 (a hint: it never faults, and past the
/// weights' end it is ignored).
///
/// # Safety
/// Block `i` lies inside the panel's allocation.
#[inline(always)]
unsafe fn stored_block(pb: *const u8, i: usize, bb: usize, prefetch: bool) -> *const u8 {
    // SAFETY: the caller's.
    let blk = unsafe { pb.add(i * bb) };
    if prefetch {
        let at = blk.wrapping_add(PREFETCH_BYTES);
        for l in (0..bb).step_by(64) {
            // SAFETY: a prefetch (SSE, in every x86-64) reads nothing the program sees and
            // cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(l) as *const i8) };
        }
    }
    blk
}

/// Runs `$body` for each 32-block `$b` of the panel at `$pb` (`$k` columns), in order, with
/// `$regs` its 8 code registers (lane `r`: row `r`), `$a` the 8 rows' scales (of the first 16
/// values for Q6_K, whose `$a2` has those of the last 16) and `$mn`, for Q4_K, their minimum
/// terms. A macro, not a function taking a closure: a closure does not
/// take the `#[target_feature]`s of the function it is written in, and its intrinsics would
/// become calls. Callers run with AVX2 and F16C and pass a whole panel of `$k` columns;
/// `$prefetch` (a constant) asks for the weights [`PREFETCH_BYTES`] ahead as it goes.
macro_rules! for_each_block {
    ($prefetch:expr, $format:expr, $pb:expr, $k:expr, |$b:ident, $regs:ident, $a:ident, $a2:ident, $mn:ident| $body:block) => {{
        let (format, pb, k): (Format, *const u8, usize) = ($format, $pb, $k);
        let bb = PANEL * format.block_bytes();
        match format {
            Format::Q4_0 => {
                for $b in 0..k / QK {
                    let blk = stored_block(pb, $b, bb, $prefetch);
                    let ($regs, $a, $mn) = (nibbles(blk.add(16)), scales(blk), None);
                    let $a2: Option<__m256> = None;
                    $body
                }
            }
            Format::Q5_0 => {
                for $b in 0..k / QK {
                    let blk = stored_block(pb, $b, bb, $prefetch);
                    let $regs = with_fifth_bits(nibbles(blk.add(48)), blk.add(16));
                    let ($a, $a2, $mn): (_, Option<__m256>, _) = (scales(blk), None, None);
                    $body
                }
            }
            Format::Q8_0 => {
                for $b in 0..k / QK {
                    let blk = stored_block(pb, $b, bb, $prefetch);
                    let ($regs, $a, $mn) = (q8_codes(blk.add(16)), scales(blk), None);
                    let $a2: Option<__m256> = None;
                    $body
                }
            }
            Format::Q4K => {
                for s in 0..k / 256 {
                    let blk = stored_block(pb, s, bb, $prefetch);
                    let (a, mn) = q4k_scales(blk);
                    for c in 0..4 {
                        let (lo, hi) = q4k_codes(blk.add(128 + 256 * c));
                        let ($b, $regs, $a, $mn) = (s * 8 + 2 * c, lo, a[2 * c], Some(mn[2 * c]));
                        let $a2: Option<__m256> = None;
                        $body
                        let ($b, $regs, $a, $mn) = (s * 8 + 2 * c + 1, hi, a[2 * c + 1], Some(mn[2 * c + 1]));
                        let $a2: Option<__m256> = None;
                        $body
                    }
                }
            }
            Format::Q6K => {
                for s in 0..k / 256 {
                    let blk = stored_block(pb, s, bb, $prefetch);
                    let d = scales(blk);
                    for beta in 0..8 {
                        let ($b, $regs) = (s * 8 + beta, q6k_codes(blk, beta));
                        let $a = q6k_scale(blk, d, 2 * beta);
                        let $a2 = Some(q6k_scale(blk, d, 2 * beta + 1));
                        let $mn: Option<__m256> = None;
                        $body
                    }
                }
            }
        }
    }};
}

/// u8 weight codes × i8 activations, four products a 32-bit lane, added to an accumulator:
/// exactly `Σ (u − CODE_OFFSET)·q` per lane once `total` turns it into 32-bit integers (at most
/// one 32-block's 8 groups go into one accumulator, or two merged). `prep` readies a weight
/// register once for several dots.
trait Dot {
    const CODE_OFFSET: i32;
    /// Whether the prefill tile keeps its float sums in memory (read and written at each float
    /// step, volatile so that they are not promoted to registers) rather than in 2·MR of
    /// AVX2's 16 registers. Where the dots need the most registers (`Avx2Nibbles`' 16-bit
    /// sums), the registers otherwise spill the weights instead: a 128 × 1536 · (8960 ×
    /// 1536)ᵀ Q4_K matmul took 10.5–10.9 ms with the sums in memory against 11.5–12.4 ms
    /// (`examples/matmul_once.rs`, 2026-12-06); for the other dots it was slower (Q6_K on
    /// `avxvnni`: 10.4–10.7 against 8.9–9.4 ms).
    const SUMS_IN_MEMORY: bool = false;
    /// Whether the prefill tile's loop takes two groups at a time (`dot2`). It pays where
    /// `dot2` saves instructions (AVX2: Q6_K 15.7-16.6 -> 13.7-14.9 ms on the shape above, Q4_K
    /// 11.3-11.6 -> 10.2-10.4) and costs where it does not (`vpdpbusd` on 256 bits, whose
    /// accumulators and sums then spill: Q4_K 8.6 -> 10.0 ms), 2026-12-06.
    const PAIR_GROUPS: bool = false;
    type W: Copy;
    type Acc: Copy;
    unsafe fn prep(w: __m256i) -> Self::W;
    unsafe fn zero() -> Self::Acc;
    unsafe fn dot(acc: Self::Acc, w: Self::W, x: __m256i) -> Self::Acc;
    /// Two dots into one accumulator (of two consecutive groups).
    #[inline(always)]
    unsafe fn dot2(
        acc: Self::Acc,
        w0: Self::W,
        x0: __m256i,
        w1: Self::W,
        x1: __m256i,
    ) -> Self::Acc {
        // SAFETY: the caller's.
        unsafe { Self::dot(Self::dot(acc, w0, x0), w1, x1) }
    }
    unsafe fn merge(a: Self::Acc, b: Self::Acc) -> Self::Acc;
    unsafe fn total(acc: Self::Acc) -> __m256i;
}

/// The accumulator of the dots that give 32-bit lanes at once.
macro_rules! acc_i32 {
    () => {
        type Acc = __m256i;
        #[inline(always)]
        unsafe fn zero() -> __m256i {
            // SAFETY: callers run inside a function with the AVX2 feature.
            unsafe { _mm256_setzero_si256() }
        }
        #[inline(always)]
        unsafe fn merge(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: as above.
            unsafe { _mm256_add_epi32(a, b) }
        }
        #[inline(always)]
        unsafe fn total(acc: __m256i) -> __m256i {
            acc
        }
    };
}

/// AVX2 for 4-bit codes (Q4_0, Q4_K): pairs of u8×i8 products summed to i16 and those added in
/// i16 over a whole 32-block, then pairs to i32 once. Exact: a 16-bit lane sums 16 products of
/// at most 15·127, 30,480 < 2¹⁵.
struct Avx2Nibbles;
impl Dot for Avx2Nibbles {
    const CODE_OFFSET: i32 = 0;
    const SUMS_IN_MEMORY: bool = true;
    const PAIR_GROUPS: bool = true;
    type W = __m256i;
    type Acc = __m256i;
    #[inline(always)]
    unsafe fn prep(w: __m256i) -> __m256i {
        w
    }
    #[inline(always)]
    unsafe fn zero() -> __m256i {
        // SAFETY: callers run inside a function with the AVX2 feature.
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: as above.
        unsafe { _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, x)) }
    }
    #[inline(always)]
    unsafe fn merge(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: as above.
        unsafe { _mm256_add_epi16(a, b) }
    }
    #[inline(always)]
    unsafe fn total(acc: __m256i) -> __m256i {
        // SAFETY: as above.
        unsafe { _mm256_madd_epi16(acc, _mm256_set1_epi16(1)) }
    }
}

/// AVX2 for codes up to 63 (Q5_0, Q6_K): pairs of u8×i8 products summed to i16, then pairs of
/// those to i32 at each dot, or at each two dots (`dot2`: the 16-bit sums of two groups added
/// first, 2·2·63·127 < 2¹⁵).
struct Avx2;
impl Dot for Avx2 {
    const CODE_OFFSET: i32 = 0;
    const PAIR_GROUPS: bool = true;
    type W = __m256i;
    acc_i32!();
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
    #[inline(always)]
    unsafe fn dot2(acc: __m256i, w0: __m256i, x0: __m256i, w1: __m256i, x1: __m256i) -> __m256i {
        // SAFETY: as above.
        unsafe {
            let p = _mm256_add_epi16(_mm256_maddubs_epi16(w0, x0), _mm256_maddubs_epi16(w1, x1));
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
    acc_i32!();
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
    acc_i32!();
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
    acc_i32!();
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
    /// See [`gemv_panel`].
    unsafe fn gemv<const M: usize>(a: &Gemv, panel: usize);
    /// See [`tile_dot`].
    unsafe fn tile<const MR: usize, const UNITS: usize>(
        tile: &Tile,
        a: &Gemv,
        i0: usize,
        col0: usize,
    );
}

macro_rules! kernels_for {
    ($dot:ty, $features:literal) => {
        impl Kernels for $dot {
            const CODE_OFFSET: i32 = <$dot as Dot>::CODE_OFFSET;
            #[inline(always)]
            unsafe fn gemv<const M: usize>(a: &Gemv, panel: usize) {
                #[target_feature(enable = $features)]
                unsafe fn inner<const M: usize>(a: &Gemv, panel: usize) {
                    // SAFETY: passed on from the caller.
                    unsafe { gemv_panel::<$dot, M>(a, panel) }
                }
                // SAFETY: the caller checked the features and the bounds.
                unsafe { inner::<M>(a, panel) }
            }
            #[inline(always)]
            unsafe fn tile<const MR: usize, const UNITS: usize>(
                tile: &Tile,
                a: &Gemv,
                i0: usize,
                col0: usize,
            ) {
                #[target_feature(enable = $features)]
                unsafe fn inner<const MR: usize, const UNITS: usize>(
                    tile: &Tile,
                    a: &Gemv,
                    i0: usize,
                    col0: usize,
                ) {
                    // SAFETY: passed on from the caller.
                    unsafe { tile_dot::<$dot, MR, UNITS>(tile, a, i0, col0) }
                }
                // SAFETY: the caller checked the features and the bounds.
                unsafe { inner::<MR, UNITS>(tile, a, i0, col0) }
            }
        }
    };
}

kernels_for!(Avx2, "avx2,fma,f16c");
kernels_for!(Avx2Nibbles, "avx2,fma,f16c");
kernels_for!(Avx2Signed, "avx2,fma,f16c");
kernels_for!(VnniVex, "avx2,fma,f16c,avxvnni");
kernels_for!(VnniEvex, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni");

/// What every task of one matmul shares.
struct Gemv<'a> {
    acts: &'a QActs,
    w: &'a QWeight,
    /// Per activation row and scale's span, what the integer dot starts from:
    /// `−(c − CODE_OFFSET)·Σq` (`QActs::corrections`).
    corr: Vec<i32>,
    out: SyncPtr<f32>,
}

/// `out = acts · wᵀ` on a 256-bit path (or the 512-bit path's formats that [`super::avx512`]
/// does not decode). The caller checked that the CPU has `path` and the shapes (m ≥ 1).
pub(super) fn matmul(path: Path, acts: &QActs, w: &QWeight, out: &mut [f32]) {
    assert!(path.supported() && path != Path::Scalar);
    assert!(acts.m >= 1 && acts.k == w.k && out.len() == acts.m * w.n);
    match path {
        Path::Avx2 if w.format.max_code() > 63 => run::<Avx2Signed>(acts, w, out),
        Path::Avx2 if w.format.max_code() <= 15 => run::<Avx2Nibbles>(acts, w, out),
        Path::Avx2 => run::<Avx2>(acts, w, out),
        Path::AvxVnni if is_x86_feature_detected!("avxvnni") => run::<VnniVex>(acts, w, out),
        _ => run::<VnniEvex>(acts, w, out),
    }
}

fn run<K: Kernels>(acts: &QActs, w: &QWeight, out: &mut [f32]) {
    let (m, n, k) = (acts.m, w.n, w.k);
    let g = Gemv {
        acts,
        w,
        corr: acts.corrections(w.format, K::CODE_OFFSET),
        out: SyncPtr(out.as_mut_ptr()),
    };
    if m < 4 {
        // About 32 KiB of weights a grab (whole panels).
        let grab = (32 << 10) / w.panel_bytes();
        super::par_grabs(
            w.panels(),
            grab,
            || (),
            |_, panels| {
                for p in panels {
                    // SAFETY: `matmul` checked the CPU features of K's path and the shapes;
                    // panel p < panels, and its rows' columns of `out` are this grab's.
                    unsafe {
                        match m {
                            1 => K::gemv::<1>(&g, p),
                            2 => K::gemv::<2>(&g, p),
                            _ => K::gemv::<3>(&g, p),
                        }
                    }
                }
            },
        );
        return;
    }
    // One tile of 16 rows a grab.
    super::par_grabs(
        n.div_ceil(16),
        1,
        || Tile::new(k, 8),
        |tile, tasks| {
            for t in tasks {
                let rows = t * 16..((t + 1) * 16).min(n);
                // SAFETY: every path here has AVX2, FMA and F16C (checked by `matmul`).
                unsafe { fill_tile(tile, w, rows.clone()) };
                let mut i = 0;
                while i < m {
                    // SAFETY: as above; the kernel writes columns `rows` (this task's alone) of
                    // activation rows i..i + 4, clamped to m.
                    unsafe {
                        let c = rows.start;
                        match (m - i, tile.units()) {
                            (1, 1) => K::tile::<1, 1>(tile, &g, i, c),
                            (2, 1) => K::tile::<2, 1>(tile, &g, i, c),
                            (3, 1) => K::tile::<3, 1>(tile, &g, i, c),
                            (_, 1) => K::tile::<4, 1>(tile, &g, i, c),
                            (1, _) => K::tile::<1, 2>(tile, &g, i, c),
                            (2, _) => K::tile::<2, 2>(tile, &g, i, c),
                            (3, _) => K::tile::<3, 2>(tile, &g, i, c),
                            _ => K::tile::<4, 2>(tile, &g, i, c),
                        }
                    }
                    i += 4;
                }
            }
        },
    );
}

/// Panel `p`'s rows against the `M` (= m, < 4) activation rows; writes `out[i·n + 8p + r]` for
/// the panel's rows below `n`.
#[inline(always)]
unsafe fn gemv_panel<D: Dot, const M: usize>(g: &Gemv, p: usize) {
    let (acts, w) = (g.acts, g.w);
    let n = w.n;
    debug_assert!(acts.m == M && p < w.panels());
    let rows = (n - p * PANEL).min(PANEL);
    // SAFETY: the caller runs this with D's features and AVX2/FMA/F16C; panel p lies inside
    // `w.data` (p < panels). `for_each_block` reads whole panel blocks; `dot_block` reads
    // activations at i·k + b·32 + 32 ≤ m·k (b < k/32) and `corr`, `d`, `qsum` at i·nb + b.
    // Stores: out[i·n + 8p + r] for r < rows (n − 8p rows at most).
    unsafe {
        let mut f = [_mm256_setzero_ps(); M];
        let pb = w.data.as_ptr().add(p * w.panel_bytes());
        for_each_block!(true, w.format, pb, w.k, |b, regs, a, a2, mn| {
            dot_block::<D, M>(g, b, &regs, a, a2, mn, &mut f)
        });
        let mut lanes = [0f32; PANEL];
        for (i, f) in f.into_iter().enumerate() {
            let o = g.out.0.add(i * n + p * PANEL);
            if rows == PANEL {
                // A whole panel: straight to `out` (a copy of a run-time length is a call).
                _mm256_storeu_ps(o, f);
            } else {
                _mm256_storeu_ps(lanes.as_mut_ptr(), f);
                std::ptr::copy_nonoverlapping(lanes.as_ptr(), o, rows);
            }
        }
    }
}

/// 32-block `b` of a panel (`regs`: lane `r` holds row `r`'s codes `4t..4t + 4` in register
/// `t`; scales `a`, with `a2` those of codes 16..32 for Q6_K; minimum terms `mn`) against every
/// activation row, in [`super::dot_scalar`]'s order: the exact integer `Σ u·q − c·Σq` per row
/// and span of a scale (two partial sums, added: integers), then `fma(dot, a·d, acc)` and,
/// with a minimum, `fma(Σq, mn·d, acc)`.
#[inline(always)]
unsafe fn dot_block<D: Dot, const M: usize>(
    g: &Gemv,
    b: usize,
    regs: &[__m256i; 8],
    a: __m256,
    a2: Option<__m256>,
    mn: Option<__m256>,
    f: &mut [__m256; M],
) {
    let (acts, k, nb) = (g.acts, g.w.k, g.w.k / QK);
    // SAFETY: the caller's (see `gemv_panel`).
    unsafe {
        let mut wp = [D::prep(regs[0]); 8];
        for t in 1..8 {
            wp[t] = D::prep(regs[t]);
        }
        for (i, f) in f.iter_mut().enumerate() {
            let q = acts.q.as_ptr().add(i * k + b * QK) as *const i32;
            // Codes 0..16 and 16..32: the two spans of Q6_K's scales.
            let (mut s0, mut s1) = (D::zero(), D::zero());
            macro_rules! x {
                ($t:expr) => {
                    _mm256_set1_epi32(q.add($t).read_unaligned())
                };
            }
            for t in [0, 2] {
                s0 = D::dot2(s0, wp[t], x!(t), wp[t + 1], x!(t + 1));
                s1 = D::dot2(s1, wp[t + 4], x!(t + 4), wp[t + 5], x!(t + 5));
            }
            let d = _mm256_set1_ps(*acts.d.get_unchecked(i * nb + b));
            if let Some(a2) = a2 {
                let c = g.corr.as_ptr().add(2 * (i * nb + b));
                let lo = _mm256_add_epi32(_mm256_set1_epi32(*c), D::total(s0));
                let hi = _mm256_add_epi32(_mm256_set1_epi32(*c.add(1)), D::total(s1));
                *f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(a, d), *f);
                *f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(a2, d), *f);
                continue;
            }
            let corr = _mm256_set1_epi32(*g.corr.get_unchecked(i * nb + b));
            let s = _mm256_add_epi32(corr, D::total(D::merge(s0, s1)));
            *f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(a, d), *f);
            if let Some(mn) = mn {
                let qs = _mm256_set1_ps(*acts.qsum.get_unchecked(i * nb + b) as f32);
                *f = _mm256_fmadd_ps(qs, _mm256_mul_ps(mn, d), *f);
            }
        }
    }
}

/// The tile's rows against activation rows `i0..i0 + MR` (≤ m), written to columns `col0..` of
/// `out`: per block and group of 4 codes, two loads of weights meet `MR` broadcast activation
/// groups in `2·MR` dots.
#[inline(always)]
unsafe fn tile_dot<D: Dot, const MR: usize, const UNITS: usize>(
    tile: &Tile,
    g: &Gemv,
    i0: usize,
    col0: usize,
) {
    let acts = g.acts;
    let (k, nb, n) = (tile.k, tile.k / QK, g.w.n);
    debug_assert!(tile.lanes == 8 && i0 + MR <= acts.m && col0 + tile.rows <= n);
    debug_assert!(tile.units() == UNITS);
    let has_min = g.w.format.has_min();
    // SAFETY: the caller runs this with D's features and AVX2/FMA/F16C. The tile holds
    // nb·8·64 code bytes and nb·UNITS·16 scales (`corr` m·nb·UNITS); activations are m × k
    // with i0 + MR ≤ m; stores go to
    // out[(i0 + r)·n + col0 + l] for l < tile.rows.
    unsafe {
        let u = tile.u.as_ptr();
        let (a, mn) = (tile.a.as_ptr(), tile.mn.as_ptr());
        let mut q = [acts.q.as_ptr(); MR];
        for (r, q) in q.iter_mut().enumerate() {
            *q = acts.q.as_ptr().add((i0 + r) * k);
        }
        let mut sums = [[_mm256_setzero_ps(); 2]; MR];
        // `sum = fma(x, y, sum)` (a macro: a closure would not take this function's target
        // features); see `Dot::SUMS_IN_MEMORY`.
        macro_rules! fma {
            ($sum:expr, $x:expr, $y:expr) => {{
                let at: &mut __m256 = $sum;
                if D::SUMS_IN_MEMORY {
                    let at = at as *mut __m256;
                    std::ptr::write_volatile(
                        at,
                        _mm256_fmadd_ps($x, $y, std::ptr::read_volatile(at)),
                    );
                } else {
                    *at = _mm256_fmadd_ps($x, $y, *at);
                }
            }};
        }
        for b in 0..nb {
            // One scale's span at a time: the whole block, or Q6_K's two halves.
            for unit in 0..UNITS {
                let mut s0 = [D::zero(); MR];
                let mut s1 = s0;
                let ub = u.add(b * 8 * 64);
                let groups = unit * 8 / UNITS..(unit + 1) * 8 / UNITS;
                // (Macros, not closures: see `for_each_block`.)
                macro_rules! w {
                    ($g:expr, $h:expr) => {
                        D::prep(_mm256_loadu_si256(ub.add($g * 64 + 32 * $h) as *const _))
                    };
                }
                macro_rules! x {
                    ($r:expr, $g:expr) => {
                        _mm256_set1_epi32(
                            (q[$r].add(b * QK + $g * 4) as *const i32).read_unaligned(),
                        )
                    };
                }
                if D::PAIR_GROUPS {
                    // Two groups at a time (a unit has 8 or 4).
                    for gi in groups.step_by(2) {
                        let (w0a, w1a, w0b, w1b) =
                            (w!(gi, 0), w!(gi, 1), w!(gi + 1, 0), w!(gi + 1, 1));
                        for r in 0..MR {
                            let (xa, xb) = (x!(r, gi), x!(r, gi + 1));
                            s0[r] = D::dot2(s0[r], w0a, xa, w0b, xb);
                            s1[r] = D::dot2(s1[r], w1a, xa, w1b, xb);
                        }
                    }
                } else {
                    for gi in groups {
                        let (w0, w1) = (w!(gi, 0), w!(gi, 1));
                        for r in 0..MR {
                            let x = x!(r, gi);
                            s0[r] = D::dot(s0[r], w0, x);
                            s1[r] = D::dot(s1[r], w1, x);
                        }
                    }
                }
                let at = (b * UNITS + unit) * 16;
                let (a0, a1) = (_mm256_loadu_ps(a.add(at)), _mm256_loadu_ps(a.add(at + 8)));
                for (r, sum) in sums.iter_mut().enumerate() {
                    let c = *g.corr.get_unchecked(((i0 + r) * nb + b) * UNITS + unit);
                    let corr = _mm256_set1_epi32(c);
                    let s0 = _mm256_add_epi32(corr, D::total(s0[r]));
                    let s1 = _mm256_add_epi32(corr, D::total(s1[r]));
                    let d = _mm256_set1_ps(*acts.d.get_unchecked((i0 + r) * nb + b));
                    fma!(&mut sum[0], _mm256_cvtepi32_ps(s0), _mm256_mul_ps(a0, d));
                    fma!(&mut sum[1], _mm256_cvtepi32_ps(s1), _mm256_mul_ps(a1, d));
                }
            }
            if has_min {
                let m0 = _mm256_loadu_ps(mn.add(b * 16));
                let m1 = _mm256_loadu_ps(mn.add(b * 16 + 8));
                for (r, sum) in sums.iter_mut().enumerate() {
                    let i = (i0 + r) * nb + b;
                    let d = _mm256_set1_ps(*acts.d.get_unchecked(i));
                    let qs = _mm256_set1_ps(*acts.qsum.get_unchecked(i) as f32);
                    fma!(&mut sum[0], qs, _mm256_mul_ps(m0, d));
                    fma!(&mut sum[1], qs, _mm256_mul_ps(m1, d));
                }
            }
        }
        let mut lanes = [0f32; 16];
        for (r, [f0, f1]) in sums.into_iter().enumerate() {
            let o = g.out.0.add((i0 + r) * n + col0);
            if tile.rows == 16 {
                // A whole tile: straight to `out` (a copy of a run-time length is a call).
                _mm256_storeu_ps(o, f0);
                _mm256_storeu_ps(o.add(8), f1);
            } else {
                _mm256_storeu_ps(lanes.as_mut_ptr(), f0);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), f1);
                std::ptr::copy_nonoverlapping(lanes.as_ptr(), o, tile.rows);
            }
        }
    }
}

/// Fills `tile` with weight rows `rows` (starting at a panel's first row, at most the tile's
/// `2·lanes`), decoded by [`for_each_block`] as the decode path decodes them. The caller
/// checked that the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fill_tile(tile: &mut Tile, w: &QWeight, rows: std::ops::Range<usize>) {
    let lanes = tile.lanes;
    assert!(rows.start.is_multiple_of(PANEL) && rows.len() <= 2 * lanes);
    assert!(rows.end <= w.n && w.k == tile.k);
    let panels = rows.len().div_ceil(PANEL);
    if panels * PANEL < 2 * lanes {
        // Lanes past the last panel: zeros, never stored.
        tile.u.fill(0);
        tile.a.fill(0.0);
        tile.mn.fill(0.0);
    }
    tile.rows = rows.len();
    tile.format = w.format;
    let units = tile.units();
    for pl in 0..panels {
        let p = rows.start / PANEL + pl;
        let (half, lane0) = (pl * PANEL / lanes, pl * PANEL % lanes);
        let (u, a, mn) = (
            tile.u.as_mut_ptr(),
            tile.a.as_mut_ptr(),
            tile.mn.as_mut_ptr(),
        );
        // SAFETY: panel p < w.panels() (rows.end ≤ n); the tile holds 2·lanes·k codes,
        // 4·lanes·k/32 scales and 2·lanes·k/32 minimums: block b's group g of half `half` is at
        // ((8b + g)·2 + half)·lanes·4 + lane0·4, 32 bytes, below 64·(k/32)·lanes; its scales at
        // ((b·units + unit)·2 + half)·lanes + lane0, 8 of them, below 2·units·lanes·k/32; its
        // minimums at (2b + half)·lanes + lane0.
        unsafe {
            let pb = w.data.as_ptr().add(p * w.panel_bytes());
            for_each_block!(false, w.format, pb, w.k, |b, regs, av, av2, mv| {
                for (gi, r) in regs.iter().enumerate() {
                    let at = ((b * 8 + gi) * 2 + half) * lanes * 4 + lane0 * 4;
                    _mm256_storeu_si256(u.add(at) as *mut __m256i, *r);
                }
                let at = ((b * units) * 2 + half) * lanes + lane0;
                _mm256_storeu_ps(a.add(at), av);
                if let Some(av2) = av2 {
                    _mm256_storeu_ps(a.add(at + 2 * lanes), av2);
                }
                let at = (b * 2 + half) * lanes + lane0;
                _mm256_storeu_ps(mn.add(at), mv.unwrap_or(_mm256_setzero_ps()));
            });
        }
    }
}

/// Q8_0's 8 code registers, 256 bytes at `codes`.
#[inline(always)]
unsafe fn q8_codes(codes: *const u8) -> [__m256i; 8] {
    // SAFETY: callers run with AVX and pass 256 readable bytes.
    unsafe {
        let mut r = [_mm256_setzero_si256(); 8];
        for (g, r) in r.iter_mut().enumerate() {
            *r = _mm256_loadu_si256(codes.add(32 * g) as *const __m256i);
        }
        r
    }
}

/// A pair of Q4_K sub-blocks' codes, 256 bytes at `codes`: the low nibbles (the first
/// sub-block) and the high ones.
#[inline(always)]
unsafe fn q4k_codes(codes: *const u8) -> ([__m256i; 8], [__m256i; 8]) {
    // SAFETY: callers run with AVX2 and pass 256 readable bytes.
    unsafe {
        let low = _mm256_set1_epi8(0x0f);
        let mut lo = [_mm256_setzero_si256(); 8];
        let mut hi = lo;
        for g in 0..8 {
            let x = _mm256_loadu_si256(codes.add(32 * g) as *const __m256i);
            lo[g] = _mm256_and_si256(x, low);
            hi[g] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), low);
        }
        (lo, hi)
    }
}

/// A panel block's 8 f16 scales (at `blk`) as f32, exact.
#[inline(always)]
unsafe fn scales(blk: *const u8) -> __m256 {
    // SAFETY: callers run with F16C and pass 16 readable bytes.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i)) }
}

/// Q4_0's (and Q5_0's low) codes from 128 bytes at `codes`: register `g` the low nibbles of
/// the `g`-th 32 bytes, register `g + 4` their high nibbles.
#[inline(always)]
unsafe fn nibbles(codes: *const u8) -> [__m256i; 8] {
    // SAFETY: callers run with AVX2 and pass 128 readable bytes.
    unsafe {
        let low = _mm256_set1_epi8(0x0f);
        let mut r = [_mm256_setzero_si256(); 8];
        for g in 0..4 {
            let x = _mm256_loadu_si256(codes.add(32 * g) as *const __m256i);
            r[g] = _mm256_and_si256(x, low);
            r[g + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), low);
        }
        r
    }
}

/// Q5_0's fifth bits (the 32-byte plane at `plane`, bit `t` for register `t`) set as 0x10 in
/// each code. A 16-bit shift brings bit `t` of each byte to bit 4; what crosses from the
/// neighbouring byte lands below bit 4 (left shifts) or above it (right shifts) and is masked.
#[inline(always)]
unsafe fn with_fifth_bits(mut r: [__m256i; 8], plane: *const u8) -> [__m256i; 8] {
    // SAFETY: callers run with AVX2 and pass 32 readable bytes.
    unsafe {
        let x = _mm256_loadu_si256(plane as *const __m256i);
        let five = _mm256_set1_epi8(0x10);
        let bits = [
            _mm256_slli_epi16::<4>(x),
            _mm256_slli_epi16::<3>(x),
            _mm256_slli_epi16::<2>(x),
            _mm256_slli_epi16::<1>(x),
            x,
            _mm256_srli_epi16::<1>(x),
            _mm256_srli_epi16::<2>(x),
            _mm256_srli_epi16::<3>(x),
        ];
        for (r, b) in r.iter_mut().zip(bits) {
            *r = _mm256_or_si256(*r, _mm256_and_si256(b, five));
        }
        r
    }
}

/// A Q4_K panel super-block's scales `a = d·sc` and minimum terms `mn = −(dmin·m)`, sub-block
/// by sub-block, 8 rows a register: the three packed words of every row unpacked at once, as
/// [`super::q4k_scales`] does one row (each value exact in f32).
#[inline(always)]
unsafe fn q4k_scales(blk: *const u8) -> ([__m256; 8], [__m256; 8]) {
    // SAFETY: callers run with AVX2 and F16C and pass a panel super-block (128 bytes here).
    unsafe {
        let d = scales(blk);
        let dmin = scales(blk.add(16));
        let w0 = _mm256_loadu_si256(blk.add(32) as *const __m256i);
        let w1 = _mm256_loadu_si256(blk.add(64) as *const __m256i);
        let w2 = _mm256_loadu_si256(blk.add(96) as *const __m256i);
        let low6 = _mm256_set1_epi8(0x3f);
        let low4 = _mm256_set1_epi8(0x0f);
        // Scales 0–3, 4–7, then minimums 0–3, 4–7: byte j of each row's 32-bit lane.
        let sc = [
            _mm256_and_si256(w0, low6),
            _mm256_or_si256(_mm256_and_si256(w2, low4), top2(w0)),
        ];
        let m = [
            _mm256_and_si256(w1, low6),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32::<4>(w2), low4), top2(w1)),
        ];
        let neg = _mm256_set1_ps(-0.0);
        let mut a = [_mm256_setzero_ps(); 8];
        let mut mn = a;
        for j in 0..8 {
            a[j] = _mm256_mul_ps(d, byte(sc[j / 4], j % 4));
            mn[j] = _mm256_xor_ps(_mm256_mul_ps(dmin, byte(m[j / 4], j % 4)), neg);
        }
        (a, mn)
    }
}

/// Each 32-bit lane's bits 6–7 of every byte, moved to bits 4–5.
#[inline(always)]
unsafe fn top2(w: __m256i) -> __m256i {
    // SAFETY: callers run with AVX2.
    unsafe {
        let low2 = _mm256_set1_epi8(0x03);
        _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srli_epi32::<6>(w), low2))
    }
}

/// Byte `j` of each 32-bit lane, as f32.
#[inline(always)]
unsafe fn byte(v: __m256i, j: usize) -> __m256 {
    // SAFETY: callers run with AVX2.
    unsafe {
        let shifted = _mm256_srlv_epi32(v, _mm256_set1_epi32(8 * j as i32));
        _mm256_cvtepi32_ps(_mm256_and_si256(shifted, _mm256_set1_epi32(0xff)))
    }
}

/// Q6_K scale `unit` (0..16) of a panel super-block's 8 rows, times their `d`: `a = d·sc`,
/// exact in f32 as [`super::expand_scalar`] computes it.
#[inline(always)]
unsafe fn q6k_scale(blk: *const u8, d: __m256, unit: usize) -> __m256 {
    // SAFETY: callers run with AVX2 and pass a panel super-block.
    unsafe {
        let sc = _mm_loadl_epi64(blk.add(super::Q6K_SCALES + 8 * unit) as *const __m128i);
        _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)))
    }
}

/// The 8 code registers of 32-block `beta` of a Q6_K panel super-block: the nibbles as Q4_0's,
/// then the top two bits of register `t` brought from bits `2t', 2t' + 1` (`t' = t mod 4`) of
/// plane `t / 4` to bits 4–5 by a 16-bit shift (what crosses from the neighbouring byte lands
/// outside bits 4–5 and is masked).
#[inline(always)]
unsafe fn q6k_codes(blk: *const u8, beta: usize) -> [__m256i; 8] {
    // SAFETY: callers run with AVX2 and pass a panel super-block (beta < 8).
    unsafe {
        let mut r = nibbles(blk.add(super::q6k_codes_at(beta)));
        let tops = blk.add(super::q6k_codes_at(beta) + 128);
        let mask = _mm256_set1_epi8(0x30);
        for p in 0..2 {
            let x = _mm256_loadu_si256(tops.add(32 * p) as *const __m256i);
            let bits = [
                _mm256_slli_epi16::<4>(x),
                _mm256_slli_epi16::<2>(x),
                x,
                _mm256_srli_epi16::<2>(x),
            ];
            for (t, b) in bits.into_iter().enumerate() {
                r[4 * p + t] = _mm256_or_si256(r[4 * p + t], _mm256_and_si256(b, mask));
            }
        }
        r
    }
}

/// One 32-block of activations quantized as [`super::quantize_block_scalar`] does, bit for bit:
/// the same `amax` (a NaN never wins a maximum), scale and reciprocal; each `v·inv` rounded
/// half away from zero from its truncation, after a NaN is taken as 0 and the value held to
/// ±128 (beyond which the scalar code's clamp gives ±127 all the same). Returns the scale and
/// the sums of the two halves' codes. The caller checked that the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn quantize_block(blk: &[f32], q: &mut [i8]) -> (f32, [i32; 2]) {
    assert!(blk.len() == QK && q.len() == QK);
    // SAFETY: the features are this function's; 32 values are read from `blk` and 32 bytes
    // written to `q` (asserted).
    unsafe {
        let p = blk.as_ptr();
        let mut v = [_mm256_setzero_ps(); 4];
        for (j, v) in v.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(p.add(8 * j));
        }
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        // `_mm256_max_ps(a, b)` gives `b` when either is NaN: `a` is the new value.
        let mut m = _mm256_setzero_ps();
        for v in v {
            m = _mm256_max_ps(_mm256_and_ps(v, abs), m);
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m1 = _mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2));
        let amax = _mm_cvtss_f32(m1);
        let scale = amax / 127.0;
        let inv = _mm256_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
        let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(128.0));
        let (half, neg_half) = (_mm256_set1_ps(0.5), _mm256_set1_ps(-0.5));
        let mut r = [_mm256_setzero_si256(); 4];
        for (r, v) in r.iter_mut().zip(v) {
            let y = _mm256_mul_ps(v, inv);
            let y = _mm256_and_ps(y, _mm256_cmp_ps::<_CMP_ORD_Q>(y, y));
            let y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
            let t = _mm256_cvttps_epi32(y);
            let frac = _mm256_sub_ps(y, _mm256_cvtepi32_ps(t));
            // A true comparison is −1: subtracting it adds one.
            let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half));
            let down = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(frac, neg_half));
            let t = _mm256_add_epi32(_mm256_sub_epi32(t, up), down);
            *r = _mm256_max_epi32(
                _mm256_min_epi32(t, _mm256_set1_epi32(127)),
                _mm256_set1_epi32(-127),
            );
        }
        let mut sums = [0i32; 2];
        for (h, s) in sums.iter_mut().enumerate() {
            let x = _mm256_add_epi32(r[2 * h], r[2 * h + 1]);
            let x = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256::<1>(x));
            let x = _mm_add_epi32(x, _mm_unpackhi_epi64(x, x));
            *s = _mm_cvtsi128_si32(_mm_add_epi32(x, _mm_shuffle_epi32::<1>(x)));
        }
        // Packing works within 128-bit halves: groups of 4 codes come out as
        // r0[0..4], r1[0..4], r2[0..4], r3[0..4], r0[4..8], …; put them back in order.
        let packed = _mm256_packs_epi16(
            _mm256_packs_epi32(r[0], r[1]),
            _mm256_packs_epi32(r[2], r[3]),
        );
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let codes = _mm256_permutevar8x32_epi32(packed, order);
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, codes);
        (scale, sums)
    }
}
