//! The causal attention over the KV cache (keys and values in f16), one query at a time.

use super::SyncPtr;
use half::f16;

/// Causal attention of `l` new queries (positions `pos..pos + l`) over the cached keys.
///
/// `q` is `(n_head, l, head_dim)`; `k[g]` and `v[g]` hold KV head `g`'s cached positions,
/// `(pos + l) × head_dim`, in f16 (each read as the f32 it stands for, exactly); query head `h` reads KV head `h / (n_head / k.len())`. Returns
/// `(l, n_head × head_dim)`, the layout the output projection takes. Each task takes a block of
/// queries of one head, and each query alone over exactly the keys it sees: scores `q·Kᵀ`
/// ([`query_scores`]), softmax in place (with a vectorisable `exp`), then `p·V`
/// ([`weighted_sum`]). Batching the queries into one GEMM was 12–20% faster in prefill, but its
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
    let out_ptr = SyncPtr(out.as_mut_ptr());
    // Read on this thread: a path forced for it (`with_path`) holds on the pool's threads too.
    let floats = Floats::of(super::path());
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
                let qi = &q[(h * l + i) * hd..(h * l + i + 1) * hd];
                query_scores(floats, qi, &kh[..keys * hd], scale, &mut scores);
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let inv = 1.0 / exp_shifted(&mut scores, max);
                for x in scores.iter_mut() {
                    *x *= inv;
                }
                // SAFETY: output row i of head h, `hd` floats at `(i·n_head + h)·hd`, lies in
                // `out` (l × n_head × hd) and is written by this task alone.
                let row = unsafe {
                    std::slice::from_raw_parts_mut(out_ptr.0.add((i * n_head + h) * hd), hd)
                };
                weighted_sum(floats, &scores, &vh[..keys * hd], row);
            }
        }
    });
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

/// `scores[j] = scale · (q · K[j])` for every row `j` of `k` (rows of `q.len()`), in the order
/// every path follows: eight lanes, lane `c` summing `q[d]·k[d]` for `d ≡ c (mod 8)` by fused
/// multiply-adds in increasing `d` (from 0), then `((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))`.
fn query_scores(floats: Floats, q: &[f32], k: &[f16], scale: f32, scores: &mut [f32]) {
    let hd = q.len();
    assert!(
        hd.is_multiple_of(8) && k.len() == scores.len() * hd,
        "q·Kᵀ: a head of {hd} (a multiple of 8) against {} floats for {} scores",
        k.len(),
        scores.len()
    );
    match floats {
        // SAFETY: `Floats::X86Fma` means the CPU has AVX2, FMA and F16C (`Floats::of`);
        // the lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        Floats::X86Fma => unsafe { x86::scores(q, k, scale, scores) },
        // SAFETY: `Floats::Neon` means the CPU has NEON; lengths checked above.
        #[cfg(target_arch = "aarch64")]
        Floats::Neon => unsafe { neon::scores(q, k, scale, scores) },
        Floats::Scalar => {
            for (j, s) in scores.iter_mut().enumerate() {
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

/// The eight lanes' sum in the tree every path uses.
#[inline(always)]
fn reduce8(l: &[f32; 8]) -> f32 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// `out[d] = Σ_j p[j] · v[j][d]` (rows of `out.len()`), each `d` by fused multiply-adds in
/// increasing `j`, the first a plain product: the order every path follows.
fn weighted_sum(floats: Floats, p: &[f32], v: &[f16], out: &mut [f32]) {
    let hd = out.len();
    assert!(
        hd.is_multiple_of(8) && v.len() == p.len() * hd,
        "p·V: {} weights against {} floats for a head of {hd} (a multiple of 8)",
        p.len(),
        v.len()
    );
    match floats {
        // SAFETY: as in `query_scores`.
        #[cfg(target_arch = "x86_64")]
        Floats::X86Fma => unsafe { x86::weighted_sum(p, v, out) },
        // SAFETY: as in `query_scores`.
        #[cfg(target_arch = "aarch64")]
        Floats::Neon => unsafe { neon::weighted_sum(p, v, out) },
        Floats::Scalar => {
            for (d, o) in out.iter_mut().enumerate() {
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

    /// See `query_scores`. Eight keys at a time, their lane sums reduced together by `hadd`s,
    /// whose pairing is the reference tree.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `q.len()` is a multiple of 8 and `k.len() ==
    /// scores.len() · q.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores(q: &[f32], k: &[f16], scale: f32, scores: &mut [f32]) {
        let hd = q.len();
        let n = scores.len();
        let (qp, kp) = (q.as_ptr(), k.as_ptr());
        let vscale = _mm256_set1_ps(scale);
        // One key's eight lanes.
        let lanes = |j: usize| {
            // SAFETY (for the closure's loads): row j < n of k, and q, hold `hd` floats.
            let mut acc = unsafe { _mm256_mul_ps(_mm256_loadu_ps(qp), load8(kp.add(j * hd))) };
            for c in (8..hd).step_by(8) {
                acc = unsafe {
                    _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(c)), load8(kp.add(j * hd + c)), acc)
                };
            }
            acc
        };
        let mut j = 0;
        while j + 8 <= n {
            let a: [__m256; 8] = std::array::from_fn(|t| lanes(j + t));
            // hadd(x, y) = [x0+x1, x2+x3, y0+y1, y2+y3 | x4+x5, x6+x7, y4+y5, y6+y7].
            let h01 = _mm256_hadd_ps(a[0], a[1]);
            let h23 = _mm256_hadd_ps(a[2], a[3]);
            let h45 = _mm256_hadd_ps(a[4], a[5]);
            let h67 = _mm256_hadd_ps(a[6], a[7]);
            // Key t's (x0+x1)+(x2+x3) in the low half, (x4+x5)+(x6+x7) in the high half.
            let h0123 = _mm256_hadd_ps(h01, h23);
            let h4567 = _mm256_hadd_ps(h45, h67);
            let lo = _mm256_permute2f128_ps(h0123, h4567, 0x20);
            let hi = _mm256_permute2f128_ps(h0123, h4567, 0x31);
            let s = _mm256_mul_ps(_mm256_add_ps(lo, hi), vscale);
            // SAFETY: j + 8 <= n = scores.len().
            unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(j), s) };
            j += 8;
        }
        for (t, s) in scores.iter_mut().enumerate().skip(j) {
            let mut l = [0f32; 8];
            // SAFETY: l holds 8 floats.
            unsafe { _mm256_storeu_ps(l.as_mut_ptr(), lanes(t)) };
            *s = super::reduce8(&l) * scale;
        }
    }

    /// See `weighted_sum`: 64 output floats (eight registers) at a time over every row of `v`.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `out.len()` is a multiple of 8 and `v.len() == p.len()
    /// · out.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_sum(p: &[f32], v: &[f16], out: &mut [f32]) {
        let hd = out.len();
        let vp = v.as_ptr();
        if p.is_empty() {
            out.fill(0.0);
            return;
        }
        let mut d0 = 0;
        while d0 < hd {
            let w = (hd - d0).min(64) / 8;
            let mut acc = [_mm256_setzero_ps(); 8];
            let p0 = _mm256_set1_ps(p[0]);
            for (t, a) in acc.iter_mut().enumerate().take(w) {
                // SAFETY: row 0 of v holds hd floats; d0 + 8t + 8 <= hd.
                *a = _mm256_mul_ps(p0, unsafe { load8(vp.add(d0 + 8 * t)) });
            }
            for (j, &pj) in p.iter().enumerate().skip(1) {
                let pj = _mm256_set1_ps(pj);
                for (t, a) in acc.iter_mut().enumerate().take(w) {
                    // SAFETY: row j < p.len() of v; d0 + 8t + 8 <= hd.
                    *a = _mm256_fmadd_ps(pj, unsafe { load8(vp.add(j * hd + d0 + 8 * t)) }, *a);
                }
            }
            for (t, a) in acc.iter().enumerate().take(w) {
                // SAFETY: d0 + 8t + 8 <= hd = out.len().
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(d0 + 8 * t), *a) };
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
            for n in 1..=40usize {
                let q: Vec<f32> = (0..hd).map(|_| r()).collect();
                let k: Vec<f16> = (0..n * hd).map(|_| f16::from_f32(r())).collect();
                let p: Vec<f32> = (0..n).map(|_| r().abs() / 4.0).collect();
                let reference = |path| {
                    let mut s = vec![0f32; n];
                    query_scores(Floats::of(path), &q, &k, 0.125, &mut s);
                    let mut o = vec![0f32; hd];
                    weighted_sum(Floats::of(path), &p, &k, &mut o);
                    (s, o)
                };
                let want = reference(crate::kernels::Path::Scalar);
                for path in crate::kernels::Path::available() {
                    let got = reference(path);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got.0),
                        bits(&want.0),
                        "{} q·K, hd {hd}, {n} keys",
                        path.name()
                    );
                    assert_eq!(
                        bits(&got.1),
                        bits(&want.1),
                        "{} p·V, hd {hd}, {n} keys",
                        path.name()
                    );
                }
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let path = Floats::of(crate::kernels::Path::Scalar);
        let refused =
            |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
        assert!(refused(&|| query_scores(
            path,
            &[0.0; 12],
            &[f16::ZERO; 24],
            1.0,
            &mut [0.0; 2]
        )));
        assert!(refused(&|| query_scores(
            path,
            &[0.0; 8],
            &[f16::ZERO; 16],
            1.0,
            &mut [0.0; 3]
        )));
        assert!(refused(&|| weighted_sum(
            path,
            &[0.0; 3],
            &[f16::ZERO; 16],
            &mut [0.0; 8]
        )));
        assert!(refused(&|| weighted_sum(
            path,
            &[0.0; 2],
            &[f16::ZERO; 20],
            &mut [0.0; 10]
        )));
        for p in crate::kernels::Path::available() {
            let p = Floats::of(p);
            assert!(refused(&|| query_scores(
                p,
                &[0.0; 8],
                &[f16::ZERO; 8],
                1.0,
                &mut [0.0; 2]
            )));
            assert!(refused(&|| weighted_sum(
                p,
                &[0.0; 2],
                &[f16::ZERO; 8],
                &mut [0.0; 8]
            )));
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
