//! The aarch64 kernels: NEON with `sdot` (the dotprod extension: Apple Silicon, Graviton 2 and
//! later, Cortex-A76 and later), or plain NEON (`smull` + `sadalp`).
//!
//! Each weight row is decoded once (codes in L1), then dotted with every activation row, 16
//! values at a time (the span of a Q6_K scale): 16 i8×i8 products summed exactly into 4 lanes,
//! the lanes added (`addv`), then the same float steps as [`super::dot_scalar`]. The codes are taken as signed bytes: as they are for
//! formats whose codes fit 7 bits, and as `u − 128` for Q8_0 (whose offset correction shrinks by
//! as much), so that one `i8 × i8` product serves every format.

use super::{Path, QActs, QWeight, QK};
use std::arch::aarch64::*;

/// `out = acts · wᵀ` on a NEON path. The caller checked that the CPU has `path` and the shapes
/// (m ≥ 1).
pub(super) fn matmul(path: Path, acts: &QActs, w: &QWeight, out: &mut [f32]) {
    assert!(path.supported() && matches!(path, Path::NeonDotprod | Path::Neon));
    let (m, n, k, nb) = (acts.m, w.n, w.k, w.k / QK);
    assert!(m >= 1 && acts.k == k && out.len() == m * n);
    // Codes above 127 are taken as u − 128.
    let shift = if w.format.max_code() > 127 { 128 } else { 0 };
    let corr = acts.corrections(w.format, shift);
    let units = QK / w.format.span();
    let has_min = w.format.has_min();
    let prep = |u: &mut [u8]| {
        if shift != 0 {
            u.iter_mut().for_each(|x| *x ^= 0x80);
        }
    };
    super::row_by_row(acts, w, out, prep, |d, i| {
        let row = Row {
            u: d.u,
            a: d.a,
            mn: has_min.then_some(d.mn),
            q: &acts.q[i * k..(i + 1) * k],
            d: &acts.d[i * nb..(i + 1) * nb],
            qsum: &acts.qsum[i * nb..(i + 1) * nb],
            corr: &corr[i * nb * units..(i + 1) * nb * units],
            units,
        };
        // SAFETY: the path's features were checked above; `Row::dot` checks the lengths it
        // reads.
        unsafe {
            if path == Path::NeonDotprod {
                dot_sdot(&row)
            } else {
                dot_neon(&row)
            }
        }
    });
}

/// One decoded weight row (codes as signed bytes) and one activation row.
struct Row<'a> {
    u: &'a [u8],
    a: &'a [f32],
    mn: Option<&'a [f32]>,
    q: &'a [i8],
    d: &'a [f32],
    qsum: &'a [i32],
    /// Per scale's span (`units` a block).
    corr: &'a [i32],
    /// Scales per 32-block: 1, or 2 for Q6_K (`a` and `corr` hold `units` per block).
    units: usize,
}

impl Row<'_> {
    /// The float steps of [`super::dot_scalar`], with the integer of each 16 values from
    /// `half`.
    #[inline(always)]
    fn dot(&self, half: impl Fn(*const i8, *const i8) -> i32) -> f32 {
        let units = self.units;
        assert!(units == 1 || units == 2);
        let nb = self.a.len() / units;
        assert!(self.u.len() >= nb * QK && self.q.len() >= nb * QK);
        assert!(self.d.len() >= nb && self.qsum.len() >= nb && self.corr.len() >= nb * units);
        assert!(self.mn.is_none_or(|m| m.len() >= nb));
        let mut acc = 0f32;
        for b in 0..nb {
            let (u, q) = (
                self.u[b * QK..].as_ptr() as *const i8,
                self.q[b * QK..].as_ptr(),
            );
            // SAFETY: 32 values are readable at both (asserted above).
            let (lo, hi) = unsafe { (half(u, q), half(u.add(16), q.add(16))) };
            if units == 2 {
                for (h, s) in [lo, hi].into_iter().enumerate() {
                    let s = s + self.corr[2 * b + h];
                    acc = (s as f32).mul_add(self.a[2 * b + h] * self.d[b], acc);
                }
                continue;
            }
            let s = lo + hi + self.corr[b];
            acc = (s as f32).mul_add(self.a[b] * self.d[b], acc);
            if let Some(mn) = self.mn {
                acc = (self.qsum[b] as f32).mul_add(mn[b] * self.d[b], acc);
            }
        }
        acc
    }
}

/// `acc + ` four i8 × i8 products a lane (`sdot`). Written as assembly: Rust's `vdotq_s32` is
/// not stable yet.
#[inline(always)]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: callers run with the dotprod feature; the instruction reads and writes registers
    // only.
    unsafe {
        std::arch::asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_sdot(row: &Row) -> f32 {
    row.dot(|w, x| {
        // SAFETY: `Row::dot` checked that 16 bytes are readable at both pointers; the feature
        // is this function's.
        unsafe { vaddvq_s32(sdot(vdupq_n_s32(0), vld1q_s8(w), vld1q_s8(x))) }
    })
}

#[target_feature(enable = "neon")]
unsafe fn dot_neon(row: &Row) -> f32 {
    row.dot(|w, x| {
        // SAFETY: as above. Each i8 × i8 product fits 16 bits (128 · 127).
        unsafe {
            let (wv, xv) = (vld1q_s8(w), vld1q_s8(x));
            let s = vpaddlq_s16(vmull_s8(vget_low_s8(wv), vget_low_s8(xv)));
            vaddvq_s32(vpadalq_s16(s, vmull_high_s8(wv, xv)))
        }
    })
}
