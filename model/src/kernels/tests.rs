//! Every path against the scalar reference, bit for bit, on random shapes and values; the
//! formats against candle's own quantized matmul; and the public functions against empty and
//! mismatched inputs. The real weights are checked in `tests/kernels_real.rs`.
use super::*;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

const FORMATS: [Format; 5] = [
    Format::Q4_0,
    Format::Q5_0,
    Format::Q8_0,
    Format::Q4K,
    Format::Q6K,
];

/// A small xorshift generator: the cases are the same on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// A candle tensor of `shape` drawn from N(0, sd²) (Box–Muller).
    fn normal(&mut self, sd: f32, shape: (usize, usize)) -> Tensor {
        let values: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| {
                let u = ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                let v = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
                sd * ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }
}

/// `n` rows of random stored blocks: every code pattern (Q8_0's −128 too), with finite scales
/// of either sign.
fn random_weights(rng: &mut Rng, format: Format, n: usize, k: usize) -> QWeight {
    let mut data: Vec<u8> = (0..n * format.bytes_for(k))
        .map(|_| rng.next() as u8)
        .collect();
    let scales = scale_offsets(format);
    for blk in data.chunks_exact_mut(format.block_bytes()) {
        for &at in scales {
            let s = f16::from_f32(rng.unit() * 0.05);
            blk[at..at + 2].copy_from_slice(&s.to_le_bytes());
        }
    }
    QWeight::new(format, n, k, data).unwrap()
}

/// Where a stored block keeps its f16 scales.
fn scale_offsets(format: Format) -> &'static [usize] {
    match format {
        Format::Q4K => &[0, 2],
        Format::Q6K => &[208],
        _ => &[0],
    }
}

/// `m` rows of activations, some rows of wide range, one all zeros.
fn random_acts(rng: &mut Rng, m: usize, k: usize) -> Vec<f32> {
    (0..m * k)
        .map(|i| match i / k % 4 {
            0 => rng.unit(),
            1 => rng.unit() * 1e4 * rng.unit().powi(6),
            2 if i / k == 2 => 0.0,
            _ => rng.unit() * 3.0,
        })
        .collect()
}

/// The reference: every row decoded by the scalar code, then [`dot_scalar`].
fn reference(acts: &QActs, w: &QWeight) -> Vec<f32> {
    let (m, n, k, nb) = (acts.m, w.n, w.k, w.k / QK);
    let mut u = vec![0u8; k];
    let (mut a, mut mn) = (vec![0f32; k / w.format.span()], vec![0f32; nb]);
    let mut out = vec![0f32; m * n];
    for j in 0..n {
        expand_scalar(w.format, &w.gguf_row(j), &mut u, &mut a, &mut mn);
        for i in 0..m {
            let row = Decoded {
                u: &u,
                a: &a,
                mn: &mn,
            };
            out[i * n + j] = dot_scalar(w.format, &row, acts, i);
        }
    }
    out
}

/// Every path this CPU has gives [`reference`]'s bits.
fn every_path_gives_the_reference(acts: &QActs, w: &QWeight, what: &str) {
    let want = reference(acts, w);
    for path in Path::available() {
        let mut got = vec![f32::NAN; acts.m * w.n];
        matmul_on(path, acts, w, &mut got);
        assert_bits(&got, &want, &format!("{path:?} {what}"));
    }
}

fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
    }
}

/// Every path this CPU has, every format, on random shapes: no rows, one, the decoding sizes,
/// partial tiles, widths that are not a multiple of a tile or of a chunk of blocks.
#[test]
fn every_path_equals_the_scalar_reference_bit_for_bit() {
    let mut rng = Rng(0x5eed);
    let paths = Path::available();
    eprintln!("paths: {paths:?}");
    for format in FORMATS {
        let unit = format.block_elems();
        for case in 0..40 {
            let n = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 100][case % 13];
            let k = unit * (1 + rng.below(if unit == QK { 80 } else { 6 }));
            let m = [0, 1, 2, 3, 4, 5, 7, 8, 9, 13][rng.below(10)];
            let w = random_weights(&mut rng, format, n, k);
            let acts = quantize_acts(&random_acts(&mut rng, m, k), m, k);
            every_path_gives_the_reference(&acts, &w, &format!("{format:?} n={n} k={k} m={m}"));
        }
    }
}

/// The largest sums the integer dots can meet: every code at its largest (and smallest), every
/// activation at ±127; AVX2's 16-bit partial sums must not wrap.
#[test]
fn extreme_codes_and_activations_stay_exact() {
    for format in FORMATS {
        let (n, k) = (16, format.block_elems() * 2);
        for fill in [0xffu8, 0x00, 0x77] {
            let mut data = vec![fill; n * format.bytes_for(k)];
            let scales = scale_offsets(format);
            for blk in data.chunks_exact_mut(format.block_bytes()) {
                for &at in scales {
                    blk[at..at + 2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
                }
            }
            let w = QWeight::new(format, n, k, data).unwrap();
            for sign in [1.0f32, -1.0] {
                for m in [1, 5] {
                    let acts = quantize_acts(&vec![sign; m * k], m, k);
                    let what = format!("{format:?} {fill:#x} {sign} m={m}");
                    every_path_gives_the_reference(&acts, &w, &what);
                }
            }
        }
    }
}

/// The panels hold the GGUF blocks byte for byte: each row comes back as it was given, on
/// panel boundaries and in a padded last panel.
#[test]
fn panels_give_back_every_gguf_row() {
    let mut rng = Rng(17);
    for format in FORMATS {
        for n in [1, 7, 8, 9, 16, 23] {
            let k = format.block_elems() * (1 + rng.below(4));
            let data: Vec<u8> = (0..n * format.bytes_for(k))
                .map(|_| rng.next() as u8)
                .collect();
            let w = QWeight::new(format, n, k, data.clone()).unwrap();
            assert_eq!(w.bytes(), n.div_ceil(PANEL) * PANEL * format.bytes_for(k));
            let rows: Vec<u8> = (0..n).flat_map(|j| w.gguf_row(j)).collect();
            assert!(rows == data, "{format:?} n={n} k={k}");
        }
    }
}

/// The NEON paths' decoding straight from the panels ([`QWeight::lanes`]) gives every real row's
/// codes, scales and minimum terms as the reference decodes them; portable code, so it is held
/// to the reference on every machine.
#[test]
fn panel_lanes_decode_as_the_reference() {
    let mut rng = Rng(23);
    for format in FORMATS {
        for n in [1, 8, 13, 24] {
            let k = format.block_elems() * (1 + rng.below(3));
            let w = random_weights(&mut rng, format, n, k);
            let (span, nb, per) = (format.span(), k / QK, format.block_elems() / QK);
            let mut lanes: Vec<Lanes> = (0..per).map(|_| Lanes::new()).collect();
            for j in 0..n {
                let mut u = vec![0u8; k];
                let (mut a, mut mn) = (vec![0f32; k / span], vec![0f32; nb]);
                w.expand_row(j, &mut u, &mut a, &mut mn);
                let (p, r) = (j / PANEL, j % PANEL);
                for b in 0..nb {
                    w.lanes(p, b / per, &mut lanes);
                    let lanes = &lanes[b % per];
                    let what = format!("{format:?} n={n} k={k} row {j} block {b}");
                    for v in 0..QK {
                        let got = lanes.u[32 * (v / 4) + 4 * r + v % 4];
                        assert_eq!(got, u[b * QK + v], "{what}: code {v}");
                    }
                    for unit in 0..QK / span {
                        let want = a[b * QK / span + unit];
                        assert_eq!(lanes.a[8 * unit + r].to_bits(), want.to_bits(), "{what}");
                    }
                    if format.has_min() {
                        assert_eq!(lanes.mn[r].to_bits(), mn[b].to_bits(), "{what}");
                    }
                }
            }
        }
    }
}

/// What speculative decoding and cache reuse rely on: a row alone gives what it gives inside
/// a batch, on every path.
#[test]
fn one_row_at_a_time_is_bit_identical_to_a_batch() {
    let mut rng = Rng(99);
    for format in FORMATS {
        let (n, k, m) = (37, format.block_elems() * 3, 6);
        let w = random_weights(&mut rng, format, n, k);
        let xs = random_acts(&mut rng, m, k);
        for path in Path::available() {
            let mut batch = vec![0f32; m * n];
            matmul_on(path, &quantize_acts(&xs, m, k), &w, &mut batch);
            for i in 0..m {
                let mut one = vec![0f32; n];
                let row = &xs[i * k..(i + 1) * k];
                matmul_on(path, &quantize_acts(row, 1, k), &w, &mut one);
                assert_bits(
                    &one,
                    &batch[i * n..(i + 1) * n],
                    &format!("{path:?} {format:?} row {i}"),
                );
            }
        }
    }
}

fn ggml(format: Format) -> GgmlDType {
    match format {
        Format::Q4_0 => GgmlDType::Q4_0,
        Format::Q5_0 => GgmlDType::Q5_0,
        Format::Q8_0 => GgmlDType::Q8_0,
        Format::Q4K => GgmlDType::Q4K,
        Format::Q6K => GgmlDType::Q6K,
    }
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let (num, den) = a.iter().zip(b).fold((0f64, 0f64), |(n, d), (x, y)| {
        (n + ((x - y) as f64).powi(2), d + (*x as f64).powi(2))
    });
    (num / den).sqrt()
}

/// The most relative error rounding Gaussian activations to 8 bits may add to a product: it
/// adds about 0.5% (candle's matmul too), 1.1% on an unlucky draw, so 2% leaves room without
/// hiding a wrong scale or code, which errs by tens of percent.
const MAX_ERROR: f64 = 2e-2;

/// The formats mean what ggml means: a dequantized row is candle's, exactly, and the matmul is
/// about as close to the exact product of those weights as candle's own quantized matmul (both
/// round the activations to 8 bits; candle per 256 for K-quants, nib per 32).
#[test]
fn every_format_matches_candle() {
    let dev = Device::Cpu;
    let mut rng = Rng(0xca9d1e);
    for format in FORMATS {
        for (n, k, m) in [(64, 896, 1), (40, 512, 7), (33, 256, 4)] {
            let k = k / format.block_elems() * format.block_elems();
            let w = rng.normal(0.05, (n, k));
            let q = QTensor::quantize(&w, ggml(format)).unwrap();
            let ours = QWeight::new(format, n, k, q.data().unwrap().into_owned()).unwrap();
            let deq = q.dequantize(&dev).unwrap().to_vec2::<f32>().unwrap();
            let x = rng.normal(1.0, (m, k));
            let theirs = QMatMul::from_qtensor(q).unwrap().forward(&x).unwrap();
            let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let exact: Vec<f32> = (0..m * n)
                .map(|o| {
                    let (i, j) = (o / n, o % n);
                    (0..k)
                        .map(|c| xs[i * k + c] as f64 * deq[j][c] as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            let candle = rel_err(&exact, &theirs);
            for path in Path::available() {
                let mut got = vec![0f32; m * n];
                matmul_on(path, &quantize_acts(&xs, m, k), &ours, &mut got);
                let e = rel_err(&exact, &got);
                assert!(
                    e <= MAX_ERROR && e <= 1.5 * candle,
                    "{path:?} {format:?} {n}x{k} m={m}: relative error {e}, candle's {candle}"
                );
            }
            let mut row = vec![0f32; k];
            for (j, want) in deq.iter().enumerate() {
                ours.dequantize_row(j, &mut row);
                assert_bits(&row, want, &format!("{format:?} row {j} dequantized"));
            }
        }
    }
}

/// The fused gating gives candle's `silu(gate) * up` bit for bit, over runs split between the
/// threads (lengths around the 16 Ki run), and on extreme values (large of either sign, where
/// the exponential overflows or vanishes, and zeros).
#[test]
fn silu_mul_is_candles_silu_then_mul() {
    let mut rng = Rng(77);
    for len in [0, 1, 7, 16 << 10, (16 << 10) + 1, 3 * (16 << 10) + 5] {
        let mut gate: Vec<f32> = (0..len).map(|_| rng.unit() * 12.0).collect();
        let up: Vec<f32> = (0..len).map(|_| rng.unit() * 3.0).collect();
        for (i, x) in [100.0, -100.0, 0.0, -0.0, 88.8, -88.8]
            .into_iter()
            .enumerate()
        {
            if i < len {
                gate[i] = x;
            }
        }
        let dev = Device::Cpu;
        let t = |v: &[f32]| Tensor::from_slice(v, v.len(), &dev).unwrap();
        let want = (candle_nn::ops::silu(&t(&gate)).unwrap() * t(&up)).unwrap();
        silu_mul(&mut gate, &up);
        assert_bits(
            &gate,
            &want.to_vec1::<f32>().unwrap(),
            &format!("silu_mul of {len}"),
        );
    }
}

/// `NIB_KERNELS` names a path; one the CPU lacks, or no path at all, is an error that names
/// the paths this CPU has.
#[test]
fn a_forced_path_must_exist_on_this_cpu() {
    assert_eq!(Path::choose(None), Ok(Path::available()[0]));
    assert_eq!(Path::choose(Some("scalar")), Ok(Path::Scalar));
    let e = Path::choose(Some("avx1024")).unwrap_err();
    assert!(e.contains("scalar") && e.contains("avx1024"), "{e}");
    for p in Path::ALL {
        match Path::choose(Some(p.name())) {
            Ok(got) => assert!(got == p && p.supported()),
            Err(e) => assert!(
                !p.supported() && e.contains(p.name()) && e.contains("scalar"),
                "{e}"
            ),
        }
    }
}

/// Whether `f` panics (a checked refusal) rather than returning.
fn refuses(f: impl FnOnce()) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
}

/// Empty and mismatched inputs get a panic from a check, never a read or write out of bounds.
#[test]
fn the_public_kernels_refuse_mismatched_inputs() {
    let mut rng = Rng(5);
    for format in FORMATS {
        let k = format.block_elems();
        assert!(QWeight::new(format, 2, k, vec![0; 3]).is_none());
        assert!(QWeight::new(format, 2, k + 1, vec![0; 2 * format.block_bytes()]).is_none());
        assert!(QWeight::new(format, usize::MAX, k, vec![]).is_none());
        let empty = QWeight::new(format, 0, k, vec![]).unwrap();
        let w = random_weights(&mut rng, format, 3, k);
        for path in Path::available() {
            // No rows, no weights: nothing to do, and nothing is touched.
            matmul_on(path, &quantize_acts(&[], 0, k), &w, &mut []);
            matmul_on(path, &quantize_acts(&vec![1.0; k], 1, k), &empty, &mut []);
            let acts = quantize_acts(&vec![1.0; 2 * k], 2, k);
            assert!(refuses(|| matmul_on(path, &acts, &w, &mut [0.0; 5])));
            let wide = quantize_acts(&vec![1.0; 2 * k + 2 * QK], 2, k + QK);
            assert!(refuses(|| matmul_on(path, &wide, &w, &mut [0.0; 6])));
            let (mut u, mut a, mut mn) = (vec![0u8; k - 1], vec![0f32; k / QK], vec![0f32; k / QK]);
            assert!(refuses(|| w.expand_row(0, &mut u, &mut a, &mut mn)));
            let mut u = vec![0u8; k];
            assert!(refuses(|| w.expand_row(3, &mut u, &mut a, &mut mn)));
            if format.has_min() {
                assert!(refuses(|| w.expand_row(0, &mut u, &mut a, &mut [])));
            }
        }
        assert!(refuses(|| matmul(&[1.0; 5], 1, &w, &mut [0.0; 3])));
        assert!(refuses(|| w.dequantize_row(0, &mut [0.0; 3])));
    }
    assert!(refuses(|| {
        quantize_acts(&[0.0; 40], 1, 40);
    }));
    assert!(refuses(|| silu_mul(&mut [0.0; 3], &[0.0; 4])));
    assert!(refuses(|| {
        quantize_acts(&[0.0; 64], 3, 32);
    }));
    // Attention: heads, cache lengths and the query's size are checked.
    let kv = vec![vec![f16::ZERO; 4 * 8]; 2];
    assert_eq!(attention(&[0.5; 4 * 8], 1, 3, &kv, &kv, 4, 8).len(), 4 * 8);
    assert!(refuses(|| {
        attention(&[0.5; 4 * 8], 1, 4, &kv, &kv, 4, 8);
    }));
    assert!(refuses(|| {
        attention(&[0.5; 4 * 7], 1, 3, &kv, &kv, 4, 8);
    }));
    assert!(refuses(|| {
        attention(&[0.5; 3 * 8], 1, 3, &kv, &kv, 3, 8);
    }));
    assert!(refuses(|| {
        attention(&[0.5; 4 * 8], 1, 3, &[], &[], 4, 8);
    }));
    assert!(refuses(|| {
        attention(&[0.5; 4 * 8], 1, 3, &kv, &kv[..1], 4, 8);
    }));
}

/// `round_i32` is `round() as i32` on every kind of input: halves both ways, values just under
/// a half, large, saturating and not finite; `fast_exp`'s floor from truncation is `floor`.
#[test]
fn baseline_rounding_equals_libm() {
    let mut xs = vec![
        0.0f32,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        0.499_999_97,
        -0.499_999_97,
        126.5,
        -126.5,
        127.499_99,
        8_388_607.5,
        -8_388_607.5,
        16_777_217.0,
        2.147_483_6e9,
        -2.147_483_6e9,
        3e9,
        -3e9,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let x = f32::from_bits(state as u32);
        xs.push(x);
        xs.push((state >> 40) as f32 / 65536.0 - 128.0);
    }
    for x in xs {
        assert_eq!(round_i32(x), x.round() as i32, "round({x:e})");
    }
    for i in 0..=200_000 {
        let x = -(i as f32) * 0.000_437;
        let t = x.max(-87.0) * std::f32::consts::LOG2_E;
        let (n, f) = (t.floor(), t - t.floor());
        let p = 1.0
            + f * (std::f32::consts::LN_2
                + f * (0.240_226_5
                    + f * (0.055_504_11
                        + f * (0.009_618_129 + f * (0.001_333_355_8 + f * 0.000_154_035_3)))));
        let want = f32::from_bits(((n as i32 + 127) << 23) as u32) * p;
        assert_eq!(attention::fast_exp(x).to_bits(), want.to_bits(), "exp({x})");
    }
}

/// Quantizing activations gives the scalar code's bits on every path this CPU has (AVX2 on
/// the x86 SIMD paths): random blocks of every range, halves exactly at .5, and blocks holding
/// NaN, infinities, f32::MAX, subnormal maxima (whose reciprocal scale overflows) and zeros.
#[test]
fn quantizing_activations_is_the_same_on_every_path() {
    let mut rng = Rng(41);
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-40,
        -1e-41,
        0.0,
        -0.0,
    ];
    let mut blocks: Vec<[f32; QK]> = Vec::new();
    for case in 0..4000 {
        let scale = [1.0, 1e-3, 1e4, 1e-38, 3e38][case % 5];
        let mut b = [0f32; QK];
        for v in b.iter_mut() {
            *v = rng.unit() * scale;
        }
        if case % 3 == 0 {
            // Values at k + 0.5 steps of the block's own scale: ties away from zero.
            let amax = 127.0 * (1 + rng.below(8)) as f32;
            b[0] = amax;
            for v in b.iter_mut().skip(1) {
                *v = (rng.below(254) as f32 - 127.0) * (1 + rng.below(8)) as f32 * 0.5;
            }
        }
        if case % 7 == 0 {
            let n = 1 + rng.below(4);
            for _ in 0..n {
                b[rng.below(QK)] = specials[rng.below(specials.len())];
            }
        }
        blocks.push(b);
    }
    blocks.push([f32::NAN; QK]);
    blocks.push([f32::INFINITY; QK]);
    blocks.push([1e-45; QK]);
    let x: Vec<f32> = blocks.iter().flatten().copied().collect();
    let n = blocks.len();
    let run = |path: Path| {
        let (mut q, mut d, mut s, mut s16) =
            (vec![0i8; n * QK], vec![0f32; n], vec![0; n], vec![0; 2 * n]);
        quantize_blocks(path, &x, &mut q, &mut d, &mut s, &mut s16);
        (q, d.iter().map(|d| d.to_bits()).collect::<Vec<_>>(), s, s16)
    };
    let want = run(Path::Scalar);
    for path in Path::available() {
        let got = run(path);
        for (i, blk) in blocks.iter().enumerate() {
            let what = format!("{path:?}, block {i}: {blk:?}");
            assert_eq!(
                got.0[i * QK..(i + 1) * QK],
                want.0[i * QK..(i + 1) * QK],
                "{what}"
            );
            assert_eq!(got.1[i], want.1[i], "{what}");
            assert_eq!(
                (got.2[i], &got.3[2 * i..2 * i + 2]),
                (want.2[i], &want.3[2 * i..2 * i + 2]),
                "{what}"
            );
        }
    }
    // And a whole prompt through the pool gives what one block at a time gives.
    let (m, k) = (n * QK / 1024, 1024);
    let acts = quantize_acts(&x[..m * k], m, k);
    assert_eq!(acts.q, want.0[..m * k]);
    assert_eq!(acts.qsum16, want.3[..2 * m * k / QK]);
}
