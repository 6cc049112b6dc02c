//! Criterion benches of the CPU kernels at the default model's shapes, each beside candle's own
//! kernel for the same work: `cargo bench -p nib-model --bench kernels`.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nib_model::kernels::{self, Format, QWeight};

/// (name, rows, columns, stored type): the linear layers of Qwen2.5-Coder-0.5B.
const SHAPES: &[(&str, usize, usize, GgmlDType, Format)] = &[
    ("ffn_gate_up.q5_0", 4864, 896, GgmlDType::Q5_0, Format::Q5_0),
    ("attn_q_o.q5_0", 896, 896, GgmlDType::Q5_0, Format::Q5_0),
    ("output.q8_0", 151936, 896, GgmlDType::Q8_0, Format::Q8_0),
];

fn matmul(c: &mut Criterion) {
    let dev = Device::Cpu;
    for &(name, n, k, dtype, format) in SHAPES {
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let ours = QWeight::new(format, n, k, q.data().unwrap().into_owned()).unwrap();
        let theirs = QMatMul::from_qtensor(q).unwrap();
        let mut group = c.benchmark_group(format!("matmul/{name}"));
        group.sample_size(10);
        for m in [1usize, 16, 128] {
            if n > 100_000 && m > 1 {
                continue; // the output layer only ever sees the last position
            }
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut out = vec![0f32; m * n];
            group.bench_with_input(BenchmarkId::new("nib", m), &m, |b, &m| {
                b.iter(|| kernels::matmul(&xs, m, &ours, &mut out))
            });
            group.bench_with_input(BenchmarkId::new("candle", m), &m, |b, _| {
                b.iter(|| theirs.forward(&x).unwrap())
            });
        }
        group.finish();
    }
}

fn attention(c: &mut Criterion) {
    // 14 query heads sharing 2 KV heads of 64 dimensions, 1,024 cached positions.
    let (n_head, n_kv, hd, pos) = (14, 2, 64, 1024);
    let mut group = c.benchmark_group("attention");
    group.sample_size(10);
    for l in [1usize, 128] {
        let t = pos + l;
        let q: Vec<f32> = (0..n_head * l * hd).map(|i| (i % 7) as f32 * 0.1).collect();
        let kv: Vec<Vec<half::f16>> = (0..n_kv)
            .map(|g| {
                (0..t * hd)
                    .map(|i| half::f16::from_f32(((i + g) % 5) as f32 * 0.1))
                    .collect()
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("nib", l), &l, |b, &l| {
            b.iter(|| kernels::attention(&q, l, pos, &kv, &kv, n_head, hd))
        });
    }
    group.finish();
}

criterion_group!(benches, matmul, attention);
criterion_main!(benches);
