//! nib's quantized matmul agrees with candle's on the real model's Q5_0 weights.

mod common;

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};
use nib_model::gguf::GgufFile;
use nib_model::kernels::{self, Format, QWeight};

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
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let want = theirs
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut got = vec![0f32; m * n];
            kernels::matmul(
                &x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                m,
                &ours,
                &mut got,
            );
            let (num, den) = want.iter().zip(&got).fold((0f64, 0f64), |(a, b), (x, y)| {
                (a + ((x - y) as f64).powi(2), b + (*x as f64).powi(2))
            });
            let e = (num / den).sqrt();
            assert!(e <= 1e-3, "{name} m={m}: relative error {e}");
        }
    }
}
