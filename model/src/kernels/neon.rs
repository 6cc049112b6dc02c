//! The aarch64 kernels: NEON with `sdot` (the dotprod extension: Apple Silicon, Graviton 2 and
//! later, Cortex-A76 and later), or plain NEON (`smull` + `sadalp`).
//!
//! Each weight row is decoded once (codes in L1), then dotted with every activation row, a block
//! at a time: 32 i8×i8 products summed exactly into 4 lanes, the lanes added (`addv`), then the
//! same float steps as [`super::dot_scalar`]. The codes are taken as signed bytes: as they are for
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
    let corr: Vec<i32> = acts
        .qsum
        .iter()
        .map(|s| -(w.format.offset() - shift) * s)
        .collect();
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
            corr: &corr[i * nb..(i + 1) * nb],
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
    corr: &'a [i32],
}

impl Row<'_> {
    /// The float steps of [`super::dot_scalar`], with each block's integer from `block`.
    #[inline(always)]
    fn dot(&self, block: impl Fn(*const i8, *const i8) -> i32) -> f32 {
        let nb = self.a.len();
        assert!(self.u.len() >= nb * QK && self.q.len() >= nb * QK);
        assert!(self.d.len() >= nb && self.qsum.len() >= nb && self.corr.len() >= nb);
        assert!(self.mn.is_none_or(|m| m.len() >= nb));
        let mut acc = 0f32;
        for b in 0..nb {
            let s = block(
                self.u[b * QK..].as_ptr() as *const i8,
                self.q[b * QK..].as_ptr(),
            ) + self.corr[b];
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
        // SAFETY: `Row::dot` checked that 32 bytes are readable at both pointers; the feature
        // is this function's.
        unsafe {
            let s = sdot(vdupq_n_s32(0), vld1q_s8(w), vld1q_s8(x));
            vaddvq_s32(sdot(s, vld1q_s8(w.add(16)), vld1q_s8(x.add(16))))
        }
    })
}

#[target_feature(enable = "neon")]
unsafe fn dot_neon(row: &Row) -> f32 {
    row.dot(|w, x| {
        // SAFETY: as above. Each i8 × i8 product fits 16 bits (128 · 127).
        unsafe {
            let mut s = vdupq_n_s32(0);
            for h in [0, 16] {
                let (wv, xv) = (vld1q_s8(w.add(h)), vld1q_s8(x.add(h)));
                s = vpadalq_s16(s, vmull_s8(vget_low_s8(wv), vget_low_s8(xv)));
                s = vpadalq_s16(s, vmull_high_s8(wv, xv));
            }
            vaddvq_s32(s)
        }
    })
}
