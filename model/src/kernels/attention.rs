//! The causal attention over the KV cache, one query at a time.

use super::SyncPtr;

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
