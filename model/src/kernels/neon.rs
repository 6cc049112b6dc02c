//! The aarch64 kernels: NEON with `smmla` (i8mm: Apple M2 and later, Graviton 3, Cortex-A710 and
//! later), with `sdot` (dotprod: Apple Silicon, Graviton 2, Cortex-A76 and later), or plain
//! NEON (`smull` + `sadalp`).
//!
//! Each panel's stored block is decoded once ([`super::QWeight::lanes`]: 8 registers of 4 rows'
//! 4 codes, one row a 32-bit lane) and dotted with every activation row while it sits in L1.
//! - `sdot` by element multiplies a register of 4 rows by one group of 4 activations: a
//!   block's 16 of them leave each row's integer in its own lane, no horizontal sums.
//! - `smmla` takes 2 rows × 8 codes and 2 activation rows × 8 values and gives the 4 dots: two
//!   activation rows at once, twice `sdot`'s products an instruction. It pays in prefill (and
//!   in verifying drafted tokens); a single row (decoding) takes `sdot`.
//! - Plain NEON multiplies a register of 4 rows by the group's activations into 16-bit
//!   products and adds pairs into 32-bit lanes (`sadalp`).
//!
//! The codes are taken as signed bytes: as they are for formats whose codes fit 7 bits, and as
//! `u − 128` for Q8_0 (whose offset correction shrinks by as much). The integers are exact in
//! any order; the float steps are [`super::dot_scalar`]'s, 4 rows a register (`fmla` is the
//! fused `mul_add`), so every path equals the reference bit for bit.

use super::{Lanes, Path, QActs, QWeight, SyncPtr, PANEL, QK};
use std::arch::aarch64::*;

/// `out = acts · wᵀ` on a NEON path. The caller checked that the CPU has `path` and the shapes
/// (m ≥ 1).
pub(super) fn matmul(path: Path, acts: &QActs, w: &QWeight, out: &mut [f32]) {
    assert!(path.supported() && matches!(path, Path::NeonI8mm | Path::NeonDotprod | Path::Neon));
    let (m, n, k, nb) = (acts.m, w.n, w.k, w.k / QK);
    assert!(m >= 1 && acts.k == k && out.len() == m * n);
    assert!(acts.q.len() == m * k && acts.d.len() == m * nb && acts.qsum.len() == m * nb);
    // Codes above 127 are taken as u − 128.
    let flip = w.format.max_code() > 127;
    let corr = acts.corrections(w.format, if flip { 128 } else { 0 });
    let units = QK / w.format.span();
    assert_eq!(corr.len(), m * nb * units);
    let job = Job {
        acts,
        corr: &corr,
        units,
        has_min: w.format.has_min(),
    };
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let panels = n.div_ceil(PANEL);
    let per_task = if m == 1 { 4 } else { 1 };
    let per = w.format.block_elems() / QK;
    let scratch = || {
        let lanes: Vec<Lanes> = (0..per).map(|_| Lanes::new()).collect();
        (lanes, vec![0f32; m * PANEL])
    };
    super::par_grabs(
        panels.div_ceil(per_task),
        1,
        scratch,
        |(lanes, acc), tasks| {
            let out_ptr = &out_ptr;
            for t in tasks {
                for p in t * per_task..((t + 1) * per_task).min(panels) {
                    acc.fill(0.0);
                    for sb in 0..nb / per {
                        w.lanes(p, sb, lanes);
                        for (beta, lanes) in lanes.iter_mut().enumerate() {
                            if flip {
                                lanes.u.iter_mut().for_each(|x| *x ^= 0x80);
                            }
                            let b = sb * per + beta;
                            // SAFETY: the path's features were checked above; `acc` holds m × 8
                            // and `Job` the lengths asserted above; b < nb.
                            unsafe {
                                match path {
                                    Path::NeonI8mm => block_smmla(&job, lanes, b, acc),
                                    Path::NeonDotprod => block_sdot(&job, lanes, b, 0, acc),
                                    _ => block_neon(&job, lanes, b, acc),
                                }
                            }
                        }
                    }
                    for i in 0..m {
                        for r in 0..PANEL.min(n - p * PANEL) {
                            // SAFETY: i < m and 8p + r < n, and `out` is m × n (asserted); panel
                            // p's columns are this task's alone.
                            unsafe { *out_ptr.0.add(i * n + p * PANEL + r) = acc[i * PANEL + r] };
                        }
                    }
                }
            }
        },
    );
}

/// The activations and what each block's float steps take from them.
struct Job<'a> {
    acts: &'a QActs,
    /// The offset corrections, `m × nb × units`.
    corr: &'a [i32],
    /// Scales per 32-block: 1, or 2 for Q6_K.
    units: usize,
    has_min: bool,
}

/// The float steps of [`super::dot_scalar`] for one 32-block of 8 rows and activation row `i`:
/// `dots[unit][half]` the integers of rows `4·half..4·half + 4` without their offset correction;
/// `acc` the 8 rows' sums so far.
#[inline(always)]
unsafe fn finish(
    job: &Job,
    lanes: &Lanes,
    b: usize,
    i: usize,
    dots: [[int32x4_t; 2]; 2],
    acc: &mut [f32],
) {
    let nb = job.acts.k / QK;
    let d = job.acts.d[i * nb + b];
    // SAFETY: callers run with NEON and pass `acc` of 8 values; `lanes` holds 16 scales and
    // 8 minimums.
    unsafe {
        let mut f = [vld1q_f32(acc.as_ptr()), vld1q_f32(acc.as_ptr().add(4))];
        for (unit, dots) in dots.iter().enumerate().take(job.units) {
            let c = vdupq_n_s32(job.corr[(i * nb + b) * job.units + unit]);
            for (h, f) in f.iter_mut().enumerate() {
                let ad = vmulq_n_f32(vld1q_f32(lanes.a.as_ptr().add(8 * unit + 4 * h)), d);
                *f = vfmaq_f32(*f, vcvtq_f32_s32(vaddq_s32(dots[h], c)), ad);
            }
        }
        if job.has_min {
            let q = vdupq_n_f32(job.acts.qsum[i * nb + b] as f32);
            for (h, f) in f.iter_mut().enumerate() {
                let md = vmulq_n_f32(vld1q_f32(lanes.mn.as_ptr().add(4 * h)), d);
                *f = vfmaq_f32(*f, q, md);
            }
        }
        vst1q_f32(acc.as_mut_ptr(), f[0]);
        vst1q_f32(acc.as_mut_ptr().add(4), f[1]);
    }
}

/// The block's 16 code registers: `[t][half]`, group `t` (codes `4t..4t + 4`) of rows
/// `4·half..4·half + 4`.
#[inline(always)]
unsafe fn code_regs(lanes: &Lanes) -> [[int8x16_t; 2]; 8] {
    // SAFETY: callers run with NEON; `lanes.u` holds 256 bytes.
    unsafe {
        let mut w = [[vdupq_n_s8(0); 2]; 8];
        for (t, w) in w.iter_mut().enumerate() {
            for (h, w) in w.iter_mut().enumerate() {
                *w = vld1q_s8(lanes.u.as_ptr().add(32 * t + 16 * h) as *const i8);
            }
        }
        w
    }
}

/// `acc + ` each 32-bit lane's 4 bytes of `w` times group `L` (bytes `4L..4L + 4`) of `x`
/// (`sdot` by element). Assembly: Rust's `vdotq_laneq_s32` is not stable yet.
#[inline(always)]
unsafe fn sdot_lane<const L: i32>(mut acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    // SAFETY: callers run with the dotprod feature; the instruction reads and writes registers
    // only.
    unsafe {
        std::arch::asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{l}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            l = const L,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Groups `4s..4s + 4` (one half of the block: `x` holds its 16 activations) of both register
/// halves, `sdot` by element.
#[inline(always)]
unsafe fn sdot_half(acc: [int32x4_t; 2], w: &[[int8x16_t; 2]], x: int8x16_t) -> [int32x4_t; 2] {
    // SAFETY: callers run with dotprod; `w` holds 4 groups.
    unsafe {
        let mut acc = acc;
        for (h, acc) in acc.iter_mut().enumerate() {
            *acc = sdot_lane::<0>(*acc, w[0][h], x);
            *acc = sdot_lane::<1>(*acc, w[1][h], x);
            *acc = sdot_lane::<2>(*acc, w[2][h], x);
            *acc = sdot_lane::<3>(*acc, w[3][h], x);
        }
        acc
    }
}

/// Block `b` of 8 rows against activation rows `rows` (each row's 32 activations as two
/// registers): `dots(w, x0, x1)` gives the block's integers (`finish`'s `dots`), and `finish`
/// adds them into `acc`. The shape every one-row-at-a-time kernel below shares.
#[inline(always)]
unsafe fn each_row(
    job: &Job,
    lanes: &Lanes,
    b: usize,
    rows: std::ops::Range<usize>,
    acc: &mut [f32],
    dots: impl Fn(&[[int8x16_t; 2]; 8], int8x16_t, int8x16_t) -> [[int32x4_t; 2]; 2],
) {
    let (m, k) = (job.acts.m, job.acts.k);
    assert!(acc.len() >= m * PANEL && b < k / QK && rows.end <= m);
    // SAFETY: callers run with NEON; activation row i < m's block b is 32 bytes at
    // i·k + 32b < m·k (asserted by `matmul`).
    unsafe {
        let w = code_regs(lanes);
        for i in rows {
            let q = job.acts.q.as_ptr().add(i * k + b * QK);
            let d = dots(&w, vld1q_s8(q), vld1q_s8(q.add(16)));
            finish(job, lanes, b, i, d, &mut acc[i * PANEL..(i + 1) * PANEL]);
        }
    }
}

/// Block `b` of 8 rows against activation rows `from..m`, `sdot` by element.
#[target_feature(enable = "neon,dotprod")]
unsafe fn block_sdot(job: &Job, lanes: &Lanes, b: usize, from: usize, acc: &mut [f32]) {
    // SAFETY: the features are this function's; `each_row` checks its bounds.
    unsafe {
        each_row(job, lanes, b, from..job.acts.m, acc, |w, x0, x1| {
            let zero = [vdupq_n_s32(0); 2];
            let lo = sdot_half(zero, &w[..4], x0);
            if job.units == 2 {
                [lo, sdot_half(zero, &w[4..], x1)]
            } else {
                [sdot_half(lo, &w[4..], x1), zero]
            }
        })
    }
}

/// `acc + ` the 2 × 2 dots of `w`'s two rows of 8 bytes with `x`'s two rows of 8 (`smmla`):
/// lanes `[w0·x0, w0·x1, w1·x0, w1·x1]`. Assembly: Rust's `vmmlaq_s32` is not stable yet.
#[inline(always)]
unsafe fn smmla(mut acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    // SAFETY: callers run with the i8mm feature; the instruction reads and writes registers
    // only.
    unsafe {
        std::arch::asm!(
            ".arch_extension i8mm",
            "smmla {acc:v}.4s, {w:v}.16b, {x:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Block `b` of 8 rows against every activation row, two at a time with `smmla` (an odd last
/// row by `sdot`).
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn block_smmla(job: &Job, lanes: &Lanes, b: usize, acc: &mut [f32]) {
    let (m, k) = (job.acts.m, job.acts.k);
    assert!(acc.len() >= m * PANEL && b < k / QK);
    // SAFETY: the features are this function's; activation rows i and i + 1 < m have 32 bytes
    // at i·k + 32b (asserted by `matmul`).
    unsafe {
        let w = code_regs(lanes);
        // Rows 2p, 2p + 1 × codes 8s..8s + 8: groups 2s and 2s + 1 interleaved by 32-bit lane.
        let mut wm = [[vdupq_n_s8(0); 4]; 4];
        for (s, wm) in wm.iter_mut().enumerate() {
            for h in 0..2 {
                let (g0, g1) = (
                    vreinterpretq_s32_s8(w[2 * s][h]),
                    vreinterpretq_s32_s8(w[2 * s + 1][h]),
                );
                wm[2 * h] = vreinterpretq_s8_s32(vzip1q_s32(g0, g1));
                wm[2 * h + 1] = vreinterpretq_s8_s32(vzip2q_s32(g0, g1));
            }
        }
        for i in (0..m - 1).step_by(2) {
            let q0 = job.acts.q.as_ptr().add(i * k + b * QK);
            let q1 = q0.add(k);
            // [unit][row pair], lanes [r·x0, r·x1, r'·x0, r'·x1].
            let mut pair = [[vdupq_n_s32(0); 4]; 2];
            for (s, wm) in wm.iter().enumerate() {
                let x = vcombine_s8(vld1_s8(q0.add(8 * s)), vld1_s8(q1.add(8 * s)));
                let unit = if job.units == 2 { s / 2 } else { 0 };
                for (pr, wm) in wm.iter().enumerate() {
                    pair[unit][pr] = smmla(pair[unit][pr], *wm, x);
                }
            }
            for (row, i) in [i, i + 1].into_iter().enumerate() {
                let mut dots = [[vdupq_n_s32(0); 2]; 2];
                for unit in 0..job.units {
                    for h in 0..2 {
                        let (a, c) = (pair[unit][2 * h], pair[unit][2 * h + 1]);
                        dots[unit][h] = if row == 0 {
                            vuzp1q_s32(a, c)
                        } else {
                            vuzp2q_s32(a, c)
                        };
                    }
                }
                finish(job, lanes, b, i, dots, &mut acc[i * PANEL..(i + 1) * PANEL]);
            }
        }
        if m % 2 == 1 {
            block_sdot(job, lanes, b, m - 1, acc);
        }
    }
}

/// Groups `4s..4s + 4` of both register halves against `x`'s 16 activations: 16-bit products,
/// pairs added into the 32-bit lanes of `[rows 0–1, rows 2–3]` per half.
#[inline(always)]
unsafe fn smull_half(
    mut acc: [int32x4_t; 4],
    w: &[[int8x16_t; 2]],
    x: int8x16_t,
) -> [int32x4_t; 4] {
    // SAFETY: callers run with NEON; `w` holds 4 groups. Each i8 × i8 product fits 16 bits
    // (128 · 127), and `sadalp` adds pairs of them into 32 bits.
    unsafe {
        let x = vreinterpretq_s32_s8(x);
        let xs = [
            vreinterpretq_s8_s32(vdupq_laneq_s32::<0>(x)),
            vreinterpretq_s8_s32(vdupq_laneq_s32::<1>(x)),
            vreinterpretq_s8_s32(vdupq_laneq_s32::<2>(x)),
            vreinterpretq_s8_s32(vdupq_laneq_s32::<3>(x)),
        ];
        for (w, x) in w.iter().zip(xs) {
            for h in 0..2 {
                acc[2 * h] = vpadalq_s16(acc[2 * h], vmull_s8(vget_low_s8(w[h]), vget_low_s8(x)));
                acc[2 * h + 1] = vpadalq_s16(acc[2 * h + 1], vmull_high_s8(w[h], x));
            }
        }
        acc
    }
}

/// Block `b` of 8 rows against every activation row, plain NEON.
#[target_feature(enable = "neon")]
unsafe fn block_neon(job: &Job, lanes: &Lanes, b: usize, acc: &mut [f32]) {
    // Lanes [r·e01, r·e23, r'·e01, r'·e23] of rows (0, 1), (2, 3), (4, 5), (6, 7) into
    // [r0, r1, r2, r3] and [r4 .. r7].
    let rows = |p: [int32x4_t; 4]| [vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3])];
    // SAFETY: the feature is this function's; `each_row` checks its bounds.
    unsafe {
        each_row(job, lanes, b, 0..job.acts.m, acc, |w, x0, x1| {
            let zero = [vdupq_n_s32(0); 4];
            let lo = smull_half(zero, &w[..4], x0);
            if job.units == 2 {
                [rows(lo), rows(smull_half(zero, &w[4..], x1))]
            } else {
                [rows(smull_half(lo, &w[4..], x1)), [vdupq_n_s32(0); 2]]
            }
        })
    }
}
