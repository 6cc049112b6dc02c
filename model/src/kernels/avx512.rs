//! The AVX-512 VNNI kernels for Q5_0 and Q8_0: 16 lanes, tiles of 32 weight rows for prefill
//! and 16 rows' blocks decoded in registers (two rows a register) for decoding.

use super::{Format, Path, QActs, QWeight, SyncPtr, Tile, QK};
use std::arch::x86_64::*;

/// Weight rows per prefill tile: two registers of 16 lanes, one lane per row.
const TILE_ROWS: usize = 32;

/// `out = acts · wᵀ` for Q5_0 and Q8_0 weights. The caller checked that the CPU has the
/// path's features and that `acts` is m × k (m ≥ 1), `w` n × k and `out` m × n.
pub(super) fn matmul(acts: &QActs, w: &QWeight, out: &mut [f32]) {
    assert!(Path::Avx512Vnni.supported() && matches!(w.format, Format::Q5_0 | Format::Q8_0));
    let (m, n, k) = (acts.m, w.n, w.k);
    assert!(m >= 1 && acts.k == k && out.len() == m * n);
    // The unsigned codes' offset, taken off each block's integer dot.
    let corr: Vec<i32> = acts.qsum.iter().map(|s| -w.format.offset() * s).collect();
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
                    // SAFETY: the features are checked above; columns j..j + 16 (clamped to
                    // n) are this task's; the call reads rows j..j + rows of w and the m (< 4)
                    // rows of acts, whose sizes were checked above.
                    unsafe {
                        let (rows, o) = ((end - j).min(16), out_ptr.0);
                        match m {
                            1 => gemv16::<1>(w, j, rows, acts, &corr, o),
                            2 => gemv16::<2>(w, j, rows, acts, &corr, o),
                            _ => gemv16::<3>(w, j, rows, acts, &corr, o),
                        }
                    }
                }
            }
        });
        return;
    }
    // Each task owns a tile of 32 weight rows: decode them once, dot them with every
    // activation row, four at a time.
    pool.execute_chunked(n.div_ceil(TILE_ROWS), |tasks| {
        let out_ptr = &out_ptr;
        let mut tile = Tile::new(k, 16);
        for t in tasks {
            let rows = t * TILE_ROWS..((t + 1) * TILE_ROWS).min(n);
            tile.fill(Path::Avx512Vnni, w, rows.clone());
            let mut i = 0;
            while i < m {
                // SAFETY: the features are checked above; the kernel reads the tile (k
                // columns, as acts) and writes columns `rows` (this task's alone) of
                // activation rows i..i + 4 (clamped to m).
                unsafe {
                    let (o, c) = (out_ptr.0, rows.start);
                    match m - i {
                        1 => tile_dot::<1>(&tile, acts, &corr, i, o, n, c),
                        2 => tile_dot::<2>(&tile, acts, &corr, i, o, n, c),
                        3 => tile_dot::<3>(&tile, acts, &corr, i, o, n, c),
                        _ => tile_dot::<4>(&tile, acts, &corr, i, o, n, c),
                    }
                }
                i += 4;
            }
        }
    });
}

/// One block's unsigned codes, in a register.
#[inline(always)]
unsafe fn block_codes(format: Format, blk: *const u8) -> __m256i {
    // SAFETY: the caller guarantees the CPU features and the bounds this function states.
    unsafe {
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
            _ => unreachable!("the 512-bit kernels decode Q5_0 and Q8_0 only"),
        }
    }
}

/// Two rows' blocks decoded side by side: `lo`'s codes in the low 256 bits, `hi`'s in the
/// high ones (what [`block_codes`] gives for each, decoded with half the instructions).
#[inline(always)]
unsafe fn block_codes2(format: Format, lo: *const u8, hi: *const u8) -> __m512i {
    // SAFETY: the caller guarantees the CPU features and the bounds this function states.
    unsafe {
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
            _ => unreachable!("the 512-bit kernels decode Q5_0 and Q8_0 only"),
        }
    }
}

/// A block's f16 scale as f32 (exact, like `half`'s conversion).
#[inline(always)]
unsafe fn block_scale(blk: *const u8) -> f32 {
    // SAFETY: the caller guarantees the CPU features and the bounds this function states.
    unsafe {
        let bits = (blk as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(super) unsafe fn expand_row(format: Format, row: &[u8], u: &mut [u8], a: &mut [f32]) {
    // SAFETY: the caller guarantees the CPU features and the bounds this function states.
    unsafe {
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
}

/// Sixteen registers' worth of lane sums: `z[p]` holds two rows' 8-lane block dots (rows
/// `LO[p]` and `LO[p] + 4`); the result holds row `r`'s whole dot in lane `r`.
#[inline(always)]
unsafe fn lane_sums(z: &[__m512i; 8]) -> __m512i {
    // SAFETY: the caller guarantees the CPU features and the bounds this function states.
    unsafe {
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
unsafe fn gemv16<const M: usize>(
    w: &QWeight,
    j: usize,
    rows: usize,
    acts: &QActs,
    corr: &[i32],
    out: *mut f32,
) {
    // SAFETY: the caller guarantees the CPU features and the bounds this function states.
    unsafe {
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
}

/// The tile's rows against activation rows `i0..i0 + MR`, written to columns `col0..` of
/// `out` (`n` wide): per block and group of 4 codes, two loads of weights meet `MR`
/// broadcast activation groups in `2·MR` VNNI dots.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_dot<const MR: usize>(
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
