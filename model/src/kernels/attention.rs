//! The causal attention over the KV cache (keys and values in f16), one query at a time.

use super::SyncPtr;
use half::f16;

/// Causal attention of `l` new queries (positions `pos..pos + l`) over the cached keys.
///
/// `q` is `(n_head, l, head_dim)`; `k[g]` and `v[g]` hold KV head `g`'s cached positions,
/// `(pos + l) × head_dim`, in f16 (each read as the f32 it stands for, exactly); query head `h`
/// reads KV head `h / (n_head / k.len())`. Returns `(l, n_head × head_dim)`, the layout the
/// output projection takes. Each task takes a block of positions of two query heads that share
/// a KV head (or of one), and each query alone over exactly the keys it sees: scores `q·Kᵀ`
/// ([`query_scores`]), softmax in place (with a vectorisable `exp`), then `p·V`
/// ([`weighted_sum`]); the two heads' queries at a position share each load of a key or value. Batching the queries into one GEMM was 12–20% faster in prefill, but its
/// rounding depended on which queries shared the pass, so a reused cache could change a greedy
/// completion (1 in 207 HumanEval tasks did).
pub fn attention(
    q: &[f32],
    l: usize,
    pos: usize,
    k: &[Vec<f16>],
    v: &[Vec<f16>],
    n_head: usize,
    head_dim: usize,
) -> Vec<f32> {
    let hd = head_dim;
    // The unsafe GEMM calls below rely on these lengths.
    assert!(
        !k.is_empty() && k.len() == v.len() && n_head.is_multiple_of(k.len()),
        "{n_head} query heads over {} key and {} value heads",
        k.len(),
        v.len()
    );
    assert_eq!(
        Some(q.len()),
        n_head.checked_mul(l).and_then(|x| x.checked_mul(hd)),
        "q is not n_head × l × head_dim"
    );
    let cached = (pos + l) * hd;
    assert!(
        k.iter().chain(v).all(|x| x.len() >= cached),
        "the cache holds fewer than {} positions",
        pos + l
    );
    let n_rep = n_head / k.len();
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; l * n_head * hd];
    let per_task = 32;
    let blocks = l.div_ceil(per_task);
    // Query heads in twos that share a KV head (a lone one where a group's count is odd): a
    // pair reads each cached key and value once for both (GQA), each query keeping its own
    // arithmetic. Unit u is group u / per_group's heads from 2·(u mod per_group), one or two.
    let per_group = n_rep.div_ceil(2);
    let unit = |u: usize| {
        let (g, first) = (u / per_group, 2 * (u % per_group));
        (g * n_rep + first, (n_rep - first).min(2))
    };
    let out_ptr = SyncPtr(out.as_mut_ptr());
    // Read on this thread: a path forced for it (`with_path`) holds on the pool's threads too.
    let floats = Floats::of(super::path());
    super::par_grabs(
        k.len() * per_group * blocks,
        1,
        Vec::new,
        |scores, tasks| {
            let out_ptr = &out_ptr;
            for t in tasks {
                let ((h, heads), b) = (unit(t / blocks), t % blocks);
                let (kh, vh) = (&k[h / n_rep], &v[h / n_rep]);
                // One query at a time, over exactly the keys it sees: its arithmetic is then the
                // same whichever queries share its pass, so a prompt prefilled in other pieces (a
                // reused cache, a checked draft) gives bit-identical attention.
                for i in b * per_task..((b + 1) * per_task).min(l) {
                    let keys = pos + i + 1;
                    scores.clear();
                    scores.resize(heads * keys, 0f32);
                    let q_of = |h: usize| &q[(h * l + i) * hd..(h * l + i + 1) * hd];
                    let k = &kh[..keys * hd];
                    match heads {
                        1 => query_scores(floats, [q_of(h)], k, scale, scores),
                        _ => query_scores(floats, [q_of(h), q_of(h + 1)], k, scale, scores),
                    }
                    for s in scores.chunks_exact_mut(keys) {
                        let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                        let inv = 1.0 / exp_shifted(s, max);
                        for x in s.iter_mut() {
                            *x *= inv;
                        }
                    }
                    // SAFETY: output rows i of heads h..h + heads, `heads·hd` floats from
                    // `(i·n_head + h)·hd` (h + heads ≤ n_head), lie in `out` (l × n_head × hd) and
                    // are written by this task alone.
                    let rows = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ptr.0.add((i * n_head + h) * hd),
                            heads * hd,
                        )
                    };
                    let v = &vh[..keys * hd];
                    match heads {
                        1 => weighted_sum::<1>(floats, scores, v, rows),
                        _ => weighted_sum::<2>(floats, scores, v, rows),
                    }
                }
            }
        },
    );
    out
}

/// The float arithmetic a kernel path computes attention with. Only [`Floats::of`] makes one,
/// after checking that the CPU has the path: what the unsafe calls below rely on.
#[derive(Debug, Clone, Copy)]
enum Floats {
    /// AVX2, FMA and F16C: every x86 path but scalar implies them (`Path::supported`).
    #[cfg(target_arch = "x86_64")]
    X86Fma,
    /// NEON: every aarch64 path but scalar.
    #[cfg(target_arch = "aarch64")]
    Neon,
    Scalar,
}

impl Floats {
    fn of(path: super::Path) -> Self {
        assert!(path.supported(), "{} is not on this CPU", path.name());
        match path {
            #[cfg(target_arch = "x86_64")]
            super::Path::Avx512Vnni | super::Path::AvxVnni | super::Path::Avx2 => Floats::X86Fma,
            #[cfg(target_arch = "aarch64")]
            super::Path::NeonI8mm | super::Path::NeonDotprod | super::Path::Neon => Floats::Neon,
            _ => Floats::Scalar,
        }
    }
}

/// `scores[x·n + j] = scale · (q[x] · K[j])` for each of the `N` queries `q[x]` and every row
/// `j` of `k` (`n` rows of `q[x].len()`), in the order every path follows: eight lanes, lane `c`
/// summing `q[d]·k[d]` for `d ≡ c (mod 8)` by fused multiply-adds in increasing `d` (from 0),
/// then `((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))`. The queries share the keys' reads, not their
/// arithmetic: a query's scores are the same alone or in a pair.
fn query_scores<const N: usize>(
    floats: Floats,
    q: [&[f32]; N],
    k: &[f16],
    scale: f32,
    scores: &mut [f32],
) {
    let hd = q[0].len();
    let n = scores.len() / N.max(1);
    assert!(
        N >= 1
            && hd.is_multiple_of(8)
            && q.iter().all(|q| q.len() == hd)
            && scores.len() == N * n
            && k.len() == n * hd,
        "q·Kᵀ: {N} queries of {hd} (a multiple of 8) against {} floats for {} scores",
        k.len(),
        scores.len()
    );
    match floats {
        // SAFETY: `Floats::X86Fma` means the CPU has AVX2, FMA and F16C (`Floats::of`);
        // the lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        Floats::X86Fma => unsafe { x86::scores(q, k, scale, scores) },
        #[cfg(target_arch = "aarch64")]
        Floats::Neon => {
            for (x, q) in q.iter().enumerate() {
                // SAFETY: `Floats::Neon` means the CPU has NEON; lengths checked above.
                unsafe { neon::scores(q, k, scale, &mut scores[x * n..(x + 1) * n]) }
            }
        }
        Floats::Scalar => {
            for (x, q) in q.iter().enumerate() {
                for (j, s) in scores[x * n..(x + 1) * n].iter_mut().enumerate() {
                    let mut lanes = [0f32; 8];
                    for (c, (qc, kc)) in q
                        .chunks_exact(8)
                        .zip(k[j * hd..(j + 1) * hd].chunks_exact(8))
                        .enumerate()
                    {
                        for t in 0..8 {
                            let kc = kc[t].to_f32();
                            lanes[t] = if c == 0 {
                                qc[t] * kc
                            } else {
                                qc[t].mul_add(kc, lanes[t])
                            };
                        }
                    }
                    *s = reduce8(&lanes) * scale;
                }
            }
        }
    }
}

/// The eight lanes' sum in the tree every path uses.
#[inline(always)]
fn reduce8(l: &[f32; 8]) -> f32 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// `out[x·hd + d] = Σ_j p[x·n + j] · v[j][d]` for each of `N` weight rows over the same `n`
/// rows of `v` (of `hd` = `out.len() / N`), each `d` by fused multiply-adds in increasing `j`,
/// the first a plain product: the order every path follows, alone or in a pair.
fn weighted_sum<const N: usize>(floats: Floats, p: &[f32], v: &[f16], out: &mut [f32]) {
    let hd = out.len() / N.max(1);
    let n = p.len() / N.max(1);
    assert!(
        N >= 1
            && hd.is_multiple_of(8)
            && out.len() == N * hd
            && p.len() == N * n
            && v.len() == n * hd,
        "p·V: {N} × {} weights against {} floats for {N} heads of {hd} (a multiple of 8)",
        p.len() / N.max(1),
        v.len()
    );
    match floats {
        // SAFETY: as in `query_scores`.
        #[cfg(target_arch = "x86_64")]
        Floats::X86Fma => unsafe { x86::weighted_sum::<N>(p, v, out) },
        #[cfg(target_arch = "aarch64")]
        Floats::Neon => {
            for x in 0..N {
                let (p, out) = (&p[x * n..(x + 1) * n], &mut out[x * hd..(x + 1) * hd]);
                // SAFETY: as in `query_scores`.
                unsafe { neon::weighted_sum(p, v, out) }
            }
        }
        Floats::Scalar => {
            for x in 0..N {
                let p = &p[x * n..(x + 1) * n];
                for (d, o) in out[x * hd..(x + 1) * hd].iter_mut().enumerate() {
                    let mut acc = 0f32;
                    for (j, &pj) in p.iter().enumerate() {
                        let x = v[j * hd + d].to_f32();
                        acc = if j == 0 { pj * x } else { pj.mul_add(x, acc) };
                    }
                    *o = acc;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// Eight f16 at `p` as f32 (exact).
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: callers run with F16C and pass 8 readable values.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }

    /// See `query_scores`. `8 / N` keys at a time against every query (eight running sums in
    /// all, enough to hide the latency of the multiply-adds), each key's lane sums reduced by
    /// `hadd`s, whose pairing is the reference tree.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; N is 1 or 2; each `q[x].len()` is `hd`, a multiple of 8;
    /// `scores.len() == N · n` and `k.len() == n · hd`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores<const N: usize>(
        q: [&[f32]; N],
        k: &[f16],
        scale: f32,
        scores: &mut [f32],
    ) {
        const { assert!(N == 1 || N == 2) };
        let hd = q[0].len();
        let n = scores.len() / N;
        let kp = k.as_ptr();
        let qp = q.map(<[f32]>::as_ptr);
        let vscale = _mm256_set1_ps(scale);
        // `a[t][x]` = the eight lanes of key j + t against query x, for t < $keys: the keys
        // interleaved in one pass over the head, so that their sums run side by side. (A macro,
        // not a closure: a closure does not take this function's target features.)
        macro_rules! lanes {
            ($j:expr, $keys:expr) => {{
                let (j, keys) = ($j, $keys);
                let mut a = [[vscale; N]; 8];
                // SAFETY: rows j..j + keys ≤ n of k, and each query, hold `hd` floats.
                unsafe {
                    for (t, a) in a.iter_mut().enumerate().take(keys) {
                        let kv = load8(kp.add((j + t) * hd));
                        for (a, q) in a.iter_mut().zip(qp) {
                            *a = _mm256_mul_ps(_mm256_loadu_ps(q), kv);
                        }
                    }
                    let mut c = 8;
                    while c < hd {
                        for (t, a) in a.iter_mut().enumerate().take(keys) {
                            let kv = load8(kp.add((j + t) * hd + c));
                            for (a, q) in a.iter_mut().zip(qp) {
                                *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(c)), kv, *a);
                            }
                        }
                        c += 8;
                    }
                }
                a
            }};
        }
        let step = 8 / N;
        let mut j = 0;
        while j + step <= n {
            let a = lanes!(j, step);
            // `x` picks the query in every key's row of `a`, not a row.
            #[allow(clippy::needless_range_loop)]
            for x in 0..N {
                // hadd(x, y) = [x0+x1, x2+x3, y0+y1, y2+y3 | x4+x5, x6+x7, y4+y5, y6+y7].
                let h01 = _mm256_hadd_ps(a[0][x], a[1][x]);
                let h23 = _mm256_hadd_ps(a[2][x], a[3][x]);
                // Key t's (x0+x1)+(x2+x3) in the low half, (x4+x5)+(x6+x7) in the high half.
                let h0123 = _mm256_hadd_ps(h01, h23);
                // SAFETY: x·n + j + step <= N·n = scores.len().
                let at = unsafe { scores.as_mut_ptr().add(x * n + j) };
                if step == 4 {
                    let lo = _mm256_castps256_ps128(h0123);
                    let hi = _mm256_extractf128_ps::<1>(h0123);
                    let s = _mm_mul_ps(_mm_add_ps(lo, hi), _mm256_castps256_ps128(vscale));
                    // SAFETY: 4 floats at `at` (above).
                    unsafe { _mm_storeu_ps(at, s) };
                    continue;
                }
                let h45 = _mm256_hadd_ps(a[4][x], a[5][x]);
                let h67 = _mm256_hadd_ps(a[6][x], a[7][x]);
                let h4567 = _mm256_hadd_ps(h45, h67);
                let lo = _mm256_permute2f128_ps(h0123, h4567, 0x20);
                let hi = _mm256_permute2f128_ps(h0123, h4567, 0x31);
                let s = _mm256_mul_ps(_mm256_add_ps(lo, hi), vscale);
                // SAFETY: 8 floats at `at` (above).
                unsafe { _mm256_storeu_ps(at, s) };
            }
            j += step;
        }
        for t in j..n {
            let a = lanes!(t, 1);
            for x in 0..N {
                let mut l = [0f32; 8];
                // SAFETY: l holds 8 floats.
                unsafe { _mm256_storeu_ps(l.as_mut_ptr(), a[0][x]) };
                scores[x * n + t] = super::reduce8(&l) * scale;
            }
        }
    }

    /// See `weighted_sum`: `64 / N` output floats of each of the N rows (eight registers in
    /// all) at a time over every row of `v`, whose values each load serves all N.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; N is 1 or 2; `out.len() == N · hd` with `hd` a multiple
    /// of 8, `p.len() == N · n` and `v.len() == n · hd`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_sum<const N: usize>(p: &[f32], v: &[f16], out: &mut [f32]) {
        const { assert!(N == 1 || N == 2) };
        let hd = out.len() / N;
        let n = p.len() / N;
        let vp = v.as_ptr();
        if n == 0 {
            out.fill(0.0);
            return;
        }
        let regs = 8 / N;
        let mut d0 = 0;
        while d0 < hd {
            let w = (hd - d0).min(8 * regs) / 8;
            // acc[x][t]: output floats d0 + 8t.. of row x.
            let mut acc = [[_mm256_setzero_ps(); 8]; N];
            for t in 0..w {
                // SAFETY: row 0 of v holds hd floats; d0 + 8t + 8 <= hd.
                let v0 = unsafe { load8(vp.add(d0 + 8 * t)) };
                for (x, a) in acc.iter_mut().enumerate() {
                    a[t] = _mm256_mul_ps(_mm256_set1_ps(p[x * n]), v0);
                }
            }
            for j in 1..n {
                let mut pj = [_mm256_setzero_ps(); N];
                for (x, pj) in pj.iter_mut().enumerate() {
                    *pj = _mm256_set1_ps(p[x * n + j]);
                }
                for t in 0..w {
                    // SAFETY: row j < n of v; d0 + 8t + 8 <= hd.
                    let vj = unsafe { load8(vp.add(j * hd + d0 + 8 * t)) };
                    for (a, pj) in acc.iter_mut().zip(pj) {
                        a[t] = _mm256_fmadd_ps(pj, vj, a[t]);
                    }
                }
            }
            for (x, a) in acc.iter().enumerate() {
                for (t, a) in a.iter().enumerate().take(w) {
                    // SAFETY: x·hd + d0 + 8t + 8 <= N·hd = out.len().
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(x * hd + d0 + 8 * t), *a) };
                }
            }
            d0 += 8 * w;
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use half::f16;
    use std::arch::aarch64::*;

    /// Four f16 at `p` as f32 (exact): `fcvtl`, written as assembly because Rust's f16 vector
    /// types are unstable.
    #[inline(always)]
    unsafe fn load4(p: *const f16) -> float32x4_t {
        // SAFETY: callers run with NEON and pass 4 readable values.
        unsafe {
            let h = vld1_u16(p as *const u16);
            let out: float32x4_t;
            std::arch::asm!(
                "fcvtl {o:v}.4s, {h:v}.4h",
                o = out(vreg) out,
                h = in(vreg) h,
                options(pure, nomem, nostack, preserves_flags)
            );
            out
        }
    }

    /// See `query_scores`: lanes 0–3 and 4–7 in two registers, the tree in scalar code.
    ///
    /// # Safety
    /// The CPU has NEON; `q.len()` is a multiple of 8 and `k.len() == scores.len() · q.len()`.
    #[target_feature(enable = "neon")]
    pub unsafe fn scores(q: &[f32], k: &[f16], scale: f32, scores: &mut [f32]) {
        let hd = q.len();
        let (qp, kp) = (q.as_ptr(), k.as_ptr());
        for (j, s) in scores.iter_mut().enumerate() {
            // SAFETY: row j of k, and q, hold hd floats; c + 8 <= hd.
            unsafe {
                let mut lo = vmulq_f32(vld1q_f32(qp), load4(kp.add(j * hd)));
                let mut hi = vmulq_f32(vld1q_f32(qp.add(4)), load4(kp.add(j * hd + 4)));
                for c in (8..hd).step_by(8) {
                    lo = vfmaq_f32(lo, vld1q_f32(qp.add(c)), load4(kp.add(j * hd + c)));
                    hi = vfmaq_f32(hi, vld1q_f32(qp.add(c + 4)), load4(kp.add(j * hd + c + 4)));
                }
                let mut l = [0f32; 8];
                vst1q_f32(l.as_mut_ptr(), lo);
                vst1q_f32(l.as_mut_ptr().add(4), hi);
                *s = super::reduce8(&l) * scale;
            }
        }
    }

    /// See `weighted_sum`: four output floats a register, 32 at a time.
    ///
    /// # Safety
    /// The CPU has NEON; `out.len()` is a multiple of 8 and `v.len() == p.len() · out.len()`.
    #[target_feature(enable = "neon")]
    pub unsafe fn weighted_sum(p: &[f32], v: &[f16], out: &mut [f32]) {
        let hd = out.len();
        let vp = v.as_ptr();
        if p.is_empty() {
            out.fill(0.0);
            return;
        }
        let mut d0 = 0;
        while d0 < hd {
            let w = (hd - d0).min(32) / 4;
            // SAFETY: rows j < p.len() of v hold hd floats; d0 + 4t + 4 <= hd = out.len().
            unsafe {
                let mut acc = [vdupq_n_f32(0.0); 8];
                for (t, a) in acc.iter_mut().enumerate().take(w) {
                    *a = vmulq_n_f32(load4(vp.add(d0 + 4 * t)), p[0]);
                }
                for (j, &pj) in p.iter().enumerate().skip(1) {
                    for (t, a) in acc.iter_mut().enumerate().take(w) {
                        *a = vfmaq_n_f32(*a, load4(vp.add(j * hd + d0 + 4 * t)), pj);
                    }
                }
                for (t, a) in acc.iter().enumerate().take(w) {
                    vst1q_f32(out.as_mut_ptr().add(d0 + 4 * t), *a);
                }
            }
            d0 += 4 * w;
        }
    }
}

/// Replaces each `x` by `exp(x − max)` and returns their sum: eight running sums (element `i`
/// into sum `i mod 8`, in order), reduced by the tree of `reduce8`, then the last `len mod 8`
/// elements in order. Written as explicit lanes, so that the compiler vectorises it without
/// reordering anything: the same bits whatever the CPU.
fn exp_shifted(xs: &mut [f32], max: f32) -> f32 {
    for x in xs.iter_mut() {
        *x = fast_exp(*x - max);
    }
    let mut lanes = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for t in 0..8 {
            lanes[t] += c[t];
        }
    }
    tail.iter().fold(reduce8(&lanes), |s, x| s + x)
}

/// `exp(x)` for `x ≤ 0` to about 1e-5 relative error: `2^n · 2^f` with a degree-6 polynomial
/// for `2^f`, written so that the compiler vectorises it.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let t = x.max(-87.0) * std::f32::consts::LOG2_E;
    // floor(t) from SSE2's truncation: `t.floor()` would call libm for every element, as the
    // baseline x86-64 build has no SSE4.1 `roundps` to vectorise it with. Same value.
    let ti = t as i32;
    let below = (ti as f32 > t) as i32;
    let n = (ti - below) as f32;
    let f = t - n;
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5
                + f * (0.055_504_11
                    + f * (0.009_618_129 + f * (0.001_333_355_8 + f * 0.000_154_035_3)))));
    f32::from_bits(((ti - below + 127) << 23) as u32) * p
}

#[cfg(test)]
mod attention_tests {
    use super::*;

    /// Every SIMD path this CPU has computes attention with SIMD floats, not the scalar
    /// fallback (a path added to `Path` and forgotten in `Floats::of` would be correct, but
    /// slow).
    #[test]
    fn every_simd_path_has_simd_attention() {
        for path in crate::kernels::Path::available() {
            let floats = Floats::of(path);
            let scalar = matches!(floats, Floats::Scalar);
            assert_eq!(
                scalar,
                path == crate::kernels::Path::Scalar,
                "{path:?}: {floats:?}"
            );
        }
    }

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
        let k: Vec<Vec<f16>> = (0..2)
            .map(|g| (0..t * hd).map(|i| f16::from_f32(f(i * 5 + g))).collect())
            .collect();
        let v: Vec<Vec<f16>> = (0..2)
            .map(|g| (0..t * hd).map(|i| f16::from_f32(f(i * 11 + g))).collect())
            .collect();
        let all = attention(&q, l, pos, &k, &v, n_head, hd);
        // Queries a..b alone, over the cache as it stands after query b - 1.
        let piece = |a: usize, b: usize| {
            let qp: Vec<f32> = (0..n_head)
                .flat_map(|h| q[(h * l + a) * hd..(h * l + b) * hd].to_vec())
                .collect();
            let cut = |x: &Vec<Vec<f16>>| -> Vec<Vec<f16>> {
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

    /// Every path's `q·Kᵀ` and `p·V` equal the scalar reference bit for bit: head sizes 8, 64
    /// and 128, every key count from 1 to 40 (whole blocks of 8 keys and tails), random values.
    #[test]
    fn every_path_equals_the_scalar_reference() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut r = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f32 / (1u64 << 53) as f32 * 8.0 - 4.0
        };
        for hd in [8usize, 64, 128] {
            for n in 0..=40usize {
                let qa: Vec<f32> = (0..hd).map(|_| r()).collect();
                let qb: Vec<f32> = (0..hd).map(|_| r()).collect();
                let k: Vec<f16> = (0..n * hd).map(|_| f16::from_f32(r())).collect();
                let p: Vec<f32> = (0..2 * n).map(|_| r().abs() / 4.0).collect();
                // Both queries alone, then as a pair (what heads sharing a KV head do).
                let one = |path, q: &[f32], p: &[f32]| {
                    let mut s = vec![0f32; n];
                    query_scores(Floats::of(path), [q], &k, 0.125, &mut s);
                    let mut o = vec![0f32; hd];
                    weighted_sum::<1>(Floats::of(path), p, &k, &mut o);
                    (s, o)
                };
                let pair = |path| {
                    let mut s = vec![0f32; 2 * n];
                    query_scores(Floats::of(path), [&qa[..], &qb[..]], &k, 0.125, &mut s);
                    let mut o = vec![0f32; 2 * hd];
                    weighted_sum::<2>(Floats::of(path), &p, &k, &mut o);
                    (s, o)
                };
                let scalar = crate::kernels::Path::Scalar;
                let (a, b) = (one(scalar, &qa, &p[..n]), one(scalar, &qb, &p[n..]));
                let want = ([a.0, b.0].concat(), [a.1, b.1].concat());
                for path in crate::kernels::Path::available() {
                    let (a, b) = (one(path, &qa, &p[..n]), one(path, &qb, &p[n..]));
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    for (how, got) in [
                        ("alone", ([a.0, b.0].concat(), [a.1, b.1].concat())),
                        ("paired", pair(path)),
                    ] {
                        assert_eq!(
                            bits(&got.0),
                            bits(&want.0),
                            "{} q·K {how}, hd {hd}, {n} keys",
                            path.name()
                        );
                        assert_eq!(
                            bits(&got.1),
                            bits(&want.1),
                            "{} p·V {how}, hd {hd}, {n} keys",
                            path.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let refused =
            |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
        // q·Kᵀ: (each query's length, key floats, scores).
        let scores: [(&[usize], usize, usize); 6] = [
            (&[12], 24, 2),    // a head that is not a multiple of 8
            (&[8], 16, 3),     // more scores than keys
            (&[8], 8, 2),      // fewer keys than scores
            (&[8, 16], 16, 4), // two queries of different lengths
            (&[8, 8], 16, 2),  // scores for one query only
            (&[8, 8], 16, 3),  // scores not a multiple of the queries
        ];
        // p·V: (weight rows N, weights, value floats, outputs).
        let sums: [(usize, usize, usize, usize); 5] = [
            (1, 3, 16, 8),  // more weights than value rows
            (1, 2, 20, 10), // a head that is not a multiple of 8
            (1, 2, 8, 8),   // fewer value rows than weights
            (2, 4, 16, 8),  // two rows of weights, one row of output
            (2, 3, 16, 16), // weights not a multiple of the rows
        ];
        for path in crate::kernels::Path::available() {
            let p = Floats::of(path);
            for (lens, keys, n) in scores {
                let q: Vec<Vec<f32>> = lens.iter().map(|&l| vec![0.0; l]).collect();
                let k = vec![f16::ZERO; keys];
                let s = vec![0.0; n];
                assert!(
                    refused(&|| match q.as_slice() {
                        [a] => query_scores(p, [&a[..]], &k, 1.0, &mut s.clone()),
                        [a, b] => query_scores(p, [&a[..], &b[..]], &k, 1.0, &mut s.clone()),
                        _ => unreachable!(),
                    }),
                    "{} q·K {lens:?} {keys} {n}",
                    path.name()
                );
            }
            for (rows, weights, values, outs) in sums {
                let (w, v) = (vec![0.0; weights], vec![f16::ZERO; values]);
                let o = vec![0.0; outs];
                assert!(
                    refused(&|| match rows {
                        1 => weighted_sum::<1>(p, &w, &v, &mut o.clone()),
                        _ => weighted_sum::<2>(p, &w, &v, &mut o.clone()),
                    }),
                    "{} p·V {rows} {weights} {values} {outs}",
                    path.name()
                );
            }
        }
    }

    #[test]
    fn attention_matches_naive_softmax() {
        // Three query heads a KV head: a pair and a lone head in each group.
        for (n_head, n_kv) in [(4, 2), (6, 2), (3, 1)] {
            naive_softmax_case(n_head, n_kv);
        }
    }

    fn naive_softmax_case(n_head: usize, n_kv: usize) {
        let (hd, pos, l) = (64, 5, 3);
        let t = pos + l;
        let mut seed = 3u64;
        let mut r = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let q: Vec<f32> = (0..n_head * l * hd).map(|_| r() * 4.0).collect();
        let k: Vec<Vec<f16>> = (0..n_kv)
            .map(|_| (0..t * hd).map(|_| f16::from_f32(r())).collect())
            .collect();
        let v: Vec<Vec<f16>> = (0..n_kv)
            .map(|_| (0..t * hd).map(|_| f16::from_f32(r())).collect())
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
                            .map(|d| (qi[d] * k[g][j * hd + d].to_f32()) as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for d in 0..hd {
                    let want: f64 = (0..keys)
                        .map(|j| (s[j] - m).exp() / z * v[g][j * hd + d].to_f64())
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
