//! Times nib's quantized matmul against candle's on the default model's shapes.
//! `cargo run --release -p nib-model --example kernels`

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use nib_model::kernels::{self, Format, QWeight};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for (n, k, dtype, fmt) in [
        (4864, 896, GgmlDType::Q5_0, Format::Q5_0),
        (896, 896, GgmlDType::Q5_0, Format::Q5_0),
        (151936, 896, GgmlDType::Q8_0, Format::Q8_0),
    ] {
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev)?;
        let q = QTensor::quantize(&w, dtype)?;
        let ours = QWeight::new(fmt, n, k, q.data()?.into_owned()).unwrap();
        let theirs = QMatMul::from_qtensor(q)?;
        for m in [1usize, 16, 128] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            let reps = if n > 100_000 { 3 } else { 20 };
            let mut out = vec![0f32; m * n];
            kernels::matmul(&xs, m, &ours, &mut out);
            let t = Instant::now();
            for _ in 0..reps {
                kernels::matmul(&xs, m, &ours, &mut out);
            }
            let ours_ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
            let reference = theirs.forward(&x)?;
            let t = Instant::now();
            for _ in 0..reps {
                let _ = theirs.forward(&x)?;
            }
            let theirs_ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
            let r = reference.flatten_all()?.to_vec1::<f32>()?;
            let (num, den) = r.iter().zip(&out).fold((0f64, 0f64), |(a, b), (x, y)| {
                (a + ((x - y) as f64).powi(2), b + (*x as f64).powi(2))
            });
            println!(
                "{dtype:?} {n}x{k} m={m:3}: nib {ours_ms:8.2} ms  candle {theirs_ms:8.2} ms  x{:.2}  rel.err {:.2e}",
                theirs_ms / ours_ms,
                (num / den).sqrt()
            );
        }
    }
    Ok(())
}
