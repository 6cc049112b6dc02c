//! The AVX-512 VNNI prefill kernel, every format: 16 lanes, tiles of 32 weight rows (4 panels).
//! Decoding (fewer than 4 activation rows) takes the 256-bit kernels of `avx2.rs`, which
//! measured faster here than decoding 16 rows' blocks in 512-bit registers (0.5B decode 30.3
//! tok/s before, 35.5 after, `nib bench --threads 2`, 2026-12-05).

use super::{Path, QActs, QWeight, SyncPtr, Tile, QK};
use std::arch::x86_64::*;

/// Weight rows per prefill tile: two registers of 16 lanes, one lane per row.
const TILE_ROWS: usize = 32;

/// `out = acts · wᵀ` for 4 activation rows or more. The caller
/// checked that the CPU has the path's features and that `acts` is m × k, `w` n × k and `out`
/// m × n.
pub(super) fn matmul(acts: &QActs, w: &QWeight, out: &mut [f32]) {
    assert!(Path::Avx512Vnni.supported());
    let (m, n, k) = (acts.m, w.n, w.k);
    assert!(m >= 4 && acts.k == k && out.len() == m * n);
    // The unsigned codes' offset, taken off each block's integer dot.
    let corr = acts.corrections(w.format, 0);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    // Each task owns a tile of 32 weight rows: decode them once, dot them with every
    // activation row, four at a time. One tile a grab.
    super::par_grabs(
        n.div_ceil(TILE_ROWS),
        1,
        || Tile::new(k, 16),
        |tile, tasks| {
            let out_ptr = &out_ptr;
            for t in tasks {
                let rows = t * TILE_ROWS..((t + 1) * TILE_ROWS).min(n);
                // SAFETY: the AVX-512 VNNI path has AVX2, FMA and F16C (checked above).
                unsafe { super::avx2::fill_tile(tile, w, rows.clone()) };
                let mut i = 0;
                while i < m {
                    // SAFETY: the features are checked above; the kernel reads the tile (k
                    // columns, as acts) and writes columns `rows` (this task's alone) of
                    // activation rows i..i + 4 (clamped to m).
                    unsafe {
                        let (o, c) = (out_ptr.0, rows.start);
                        match (m - i, tile.units()) {
                            (1, 1) => tile_dot::<1, 1>(tile, acts, &corr, i, o, n, c),
                            (1, _) => tile_dot::<1, 2>(tile, acts, &corr, i, o, n, c),
                            (2, 1) => tile_dot::<2, 1>(tile, acts, &corr, i, o, n, c),
                            (2, _) => tile_dot::<2, 2>(tile, acts, &corr, i, o, n, c),
                            (3, 1) => tile_dot::<3, 1>(tile, acts, &corr, i, o, n, c),
                            (3, _) => tile_dot::<3, 2>(tile, acts, &corr, i, o, n, c),
                            (_, 1) => tile_dot::<4, 1>(tile, acts, &corr, i, o, n, c),
                            (_, _) => tile_dot::<4, 2>(tile, acts, &corr, i, o, n, c),
                        }
                    }
                    i += 4;
                }
            }
        },
    );
}

/// A store mask for the first `rows` of 16 lanes.
fn lanes(rows: usize) -> __mmask16 {
    if rows >= 16 {
        0xffff
    } else {
        (1 << rows) - 1
    }
}

/// The tile's rows against activation rows `i0..i0 + MR`, written to columns `col0..` of
/// `out` (`n` wide): per block and group of 4 codes, two loads of weights meet `MR`
/// broadcast activation groups in `2·MR` VNNI dots; then `dot_scalar`'s float steps, with the
/// minimum terms where the format has them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_dot<const MR: usize, const UNITS: usize>(
    tile: &Tile,
    acts: &QActs,
    corr: &[i32],
    i0: usize,
    out: *mut f32,
    n: usize,
    col0: usize,
) {
    // SAFETY: the caller guarantees the CPU features and the bounds this function states.
    unsafe {
        let (k, nb) = (tile.k, tile.k / QK);
        debug_assert!(tile.units() == UNITS);
        let u = tile.u.as_ptr();
        let (a, mn) = (tile.a.as_ptr(), tile.mn.as_ptr());
        let mut q = [acts.q.as_ptr(); MR];
        for (r, q) in q.iter_mut().enumerate() {
            *q = acts.q.as_ptr().add((i0 + r) * k);
        }
        let mut f0 = [_mm512_setzero_ps(); MR];
        let mut f1 = [_mm512_setzero_ps(); MR];
        for b in 0..nb {
            // One scale's span at a time: the whole block, or Q6_K's two halves.
            for unit in 0..UNITS {
                let mut s0 = [_mm512_setzero_si512(); MR];
                for (r, s) in s0.iter_mut().enumerate() {
                    let c = *corr.get_unchecked(((i0 + r) * nb + b) * UNITS + unit);
                    *s = _mm512_set1_epi32(c);
                }
                let mut s1 = s0;
                let ub = u.add(b * 8 * 128);
                for g in unit * 8 / UNITS..(unit + 1) * 8 / UNITS {
                    let w0 = _mm512_loadu_si512(ub.add(g * 128) as *const _);
                    let w1 = _mm512_loadu_si512(ub.add(g * 128 + 64) as *const _);
                    for r in 0..MR {
                        let x = (q[r].add(b * QK + g * 4) as *const i32).read_unaligned();
                        let x = _mm512_set1_epi32(x);
                        s0[r] = _mm512_dpbusd_epi32(s0[r], w0, x);
                        s1[r] = _mm512_dpbusd_epi32(s1[r], w1, x);
                    }
                }
                let at = (b * UNITS + unit) * 32;
                let a0 = _mm512_loadu_ps(a.add(at));
                let a1 = _mm512_loadu_ps(a.add(at + 16));
                for r in 0..MR {
                    let d = _mm512_set1_ps(*acts.d.get_unchecked((i0 + r) * nb + b));
                    let (s0, s1) = (_mm512_cvtepi32_ps(s0[r]), _mm512_cvtepi32_ps(s1[r]));
                    f0[r] = _mm512_fmadd_ps(s0, _mm512_mul_ps(a0, d), f0[r]);
                    f1[r] = _mm512_fmadd_ps(s1, _mm512_mul_ps(a1, d), f1[r]);
                }
            }
            if tile.format.has_min() {
                let m0 = _mm512_loadu_ps(mn.add(b * 32));
                let m1 = _mm512_loadu_ps(mn.add(b * 32 + 16));
                for r in 0..MR {
                    let i = (i0 + r) * nb + b;
                    let d = _mm512_set1_ps(*acts.d.get_unchecked(i));
                    let qs = _mm512_set1_ps(*acts.qsum.get_unchecked(i) as f32);
                    f0[r] = _mm512_fmadd_ps(qs, _mm512_mul_ps(m0, d), f0[r]);
                    f1[r] = _mm512_fmadd_ps(qs, _mm512_mul_ps(m1, d), f1[r]);
                }
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
