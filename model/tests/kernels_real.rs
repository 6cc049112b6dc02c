//! nib's quantized matmul agrees with candle's on the real model's weights of every format it
//! holds (Q5_0, Q8_0, Q4_K, Q6_K), and every kernel path this CPU has gives the same
//! bits on them.

mod common;

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};
use nib_model::gguf::GgufFile;
use nib_model::kernels::{self, Format, QWeight};

/// A tensor's values, flattened.
fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// `x · wᵀ` by nib's kernel.
fn nib_matmul(x: &Tensor, w: &QWeight) -> Vec<f32> {
    let m = x.dim(0).unwrap();
    let mut out = vec![0f32; m * w.n()];
    kernels::matmul(&flat(x), m, w, &mut out);
    out
}

/// The relative error of `b` against the reference `a`: ‖a − b‖ / ‖a‖.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let (num, den) = a.iter().zip(b).fold((0f64, 0f64), |(s, d), (x, y)| {
        (s + ((x - y) as f64).powi(2), d + (*x as f64).powi(2))
    });
    (num / den).sqrt()
}

#[test]
fn q5_0_kernel_matches_candle_on_real_weights() {
    let mut g = GgufFile::open(&common::real_model()).expect("open model");
    let dev = Device::Cpu;
    for name in [
        "blk.0.ffn_gate.weight",
        "blk.5.attn_q.weight",
        "blk.23.ffn_up.weight",
    ] {
        let t = g.tensor(name, &dev).unwrap();
        let (n, k) = t.shape().dims2().unwrap();
        let ours = QWeight::new(Format::Q5_0, n, k, t.data().unwrap().into_owned()).unwrap();
        let theirs = QMatMul::from_qtensor(t).unwrap();
        for m in [1, 9] {
            let x = common::normal(0x5eed + m as u64, m, k);
            let e = rel(&flat(&theirs.forward(&x).unwrap()), &nib_matmul(&x, &ours));
            assert!(e <= 1e-3, "{name} m={m}: relative error {e}");
        }
    }
}

/// A Q4_K, a Q5_0, a Q6_K and two Q8_0 tensors of the real model, on every kernel path of this CPU: as
/// close to the exact product as candle's quantized matmul (both round activations to 8 bits),
/// and the paths bit-identical.
#[test]
fn every_path_agrees_on_real_weights() {
    let mut g = GgufFile::open(&common::real_model()).expect("open model");
    let dev = Device::Cpu;
    let paths = kernels::Path::available();
    eprintln!("paths: {paths:?}");
    let first_of = |dtype| {
        let mut names: Vec<&String> = g
            .content
            .tensor_infos
            .iter()
            .filter(|(_, i)| i.ggml_dtype == dtype && i.shape.dims().len() == 2)
            .map(|(n, _)| n)
            .collect();
        names.sort();
        names.first().map(|n| n.to_string())
    };
    use candle_core::quantized::GgmlDType as T;
    let mut cases = vec![("output.weight".to_string(), Format::Q8_0)];
    for (dtype, format) in [
        (T::Q4K, Format::Q4K),
        (T::Q8_0, Format::Q8_0),
        (T::Q5_0, Format::Q5_0),
        (T::Q6K, Format::Q6K),
    ] {
        let name =
            first_of(dtype).unwrap_or_else(|| panic!("the default model has {dtype:?} tensors"));
        cases.push((name, format));
    }
    for (name, format) in cases {
        let name = name.as_str();
        let (_, dims, bytes) = g.raw(name).unwrap();
        let (n, k) = (dims[0], dims[1]);
        let ours =
            QWeight::new(format, n, k, bytes).unwrap_or_else(|| panic!("{name} is not {format:?}"));
        let t = g.tensor(name, &dev).unwrap();
        let wf = t.dequantize(&dev).unwrap();
        let theirs = QMatMul::from_qtensor(t).unwrap();
        for m in [1, 3, 6] {
            let x = common::normal(0x5eed + m as u64, m, k);
            let exact = flat(&x.matmul(&wf.t().unwrap()).unwrap());
            let candle = rel(&exact, &flat(&theirs.forward(&x).unwrap()));
            let acts = kernels::quantize_acts(&flat(&x), m, k);
            let mut first: Option<Vec<f32>> = None;
            for &path in &paths {
                let mut got = vec![0f32; m * n];
                kernels::matmul_on(path, &acts, &ours, &mut got);
                let e = rel(&exact, &got);
                // Rounding Gaussian activations to 8 bits costs about 0.5% here (candle's too),
                // 1.1% on an unlucky draw: 2% leaves room, and a wrong scale or code errs by
                // tens of percent.
                assert!(
                    e <= 2e-2 && e <= 1.5 * candle,
                    "{name} {path:?} m={m}: relative error {e}, candle's {candle}"
                );
                match &first {
                    None => first = Some(got),
                    Some(f) => assert!(
                        f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{name} m={m}: {path:?} differs from {:?}",
                        paths[0]
                    ),
                }
            }
        }
    }
}

/// Speculation checks a draft in one batch and must get what one row at a time gets: where
/// candle serves a model (a GPU, or a CPU without a nib path) the transformer relies on candle's
/// Q4_K batches being bit-identical to their rows.
#[test]
fn q4_k_batches_are_bit_identical_to_their_rows() {
    let mut g = GgufFile::open(&common::real_model()).expect("open model");
    let dev = Device::Cpu;
    let name = g
        .content
        .tensor_infos
        .iter()
        .find(|(_, i)| i.ggml_dtype == candle_core::quantized::GgmlDType::Q4K)
        .map(|(n, _)| n.clone())
        .expect("the default model has Q4_K tensors");
    let q = QMatMul::from_qtensor(g.tensor(&name, &dev).unwrap()).unwrap();
    let k = g.content.tensor_infos[&name].shape.dims()[1];
    for m in [2usize, 5, 16] {
        let x = common::normal(0x5eed + m as u64, m, k);
        let batch = flat(&q.forward(&x).unwrap());
        let rows: Vec<f32> = (0..m)
            .flat_map(|r| flat(&q.forward(&x.narrow(0, r, 1).unwrap()).unwrap()))
            .collect();
        assert!(
            batch
                .iter()
                .zip(&rows)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: a batch of {m} differs from its rows"
        );
    }
}
