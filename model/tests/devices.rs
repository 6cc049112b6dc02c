//! The GPU path of the transformer (attention through candle's tensor ops, the KV cache as device
//! tensors) against the CPU path. The first test runs that path on the CPU, so it is checked on
//! every machine; with `--features cuda` the same model also runs on the GPU and must agree.

mod common;

use candle_core::Device;
use nib_model::gguf::GgufFile;
use nib_model::transformer::{logits_vec, Transformer};
#[cfg(feature = "cuda")]
use nib_model::CancelToken;
#[cfg(not(feature = "cuda"))]
use nib_model::ModelError;
use nib_model::{load_backend, BackendKind};
use std::path::Path;

/// The largest difference relative to the largest logit.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

fn load(path: &Path, tensor_attention: bool) -> Transformer {
    let mut g = GgufFile::open(path).unwrap();
    let mut t = Transformer::load(&mut g, &Device::Cpu).unwrap();
    t.tensor_attention = tensor_attention;
    t
}

/// Token ids of a short made-up program in the tiny vocabulary.
fn prompt(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 256).collect()
}

#[test]
fn tensor_attention_matches_the_cpu_kernel_through_prefill_decode_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    check_tensor_attention(&common::tiny_model(dir.path()));
    let f32_path = dir.path().join("f32.gguf");
    let cfg = nib_model::tiny::TinyConfig {
        f32_weights: true,
        ..Default::default()
    };
    nib_model::tiny::write(&f32_path, &cfg).unwrap();
    check_tensor_attention(&f32_path);
}

fn check_tensor_attention(path: &Path) {
    let (kernel, tensor) = (load(path, false), load(path, true));
    let (mut ck, mut ct) = (kernel.new_cache(), tensor.new_cache());
    let ids = prompt(48);
    // A multi-token prefill (causal mask), then single tokens (no mask), then a two-token draft.
    for chunk in [&ids[..40], &ids[40..41], &ids[41..42], &ids[42..44]] {
        let a = logits_vec(&kernel.forward(chunk, &mut ck, None, chunk.len()).unwrap()).unwrap();
        let b = logits_vec(&tensor.forward(chunk, &mut ct, None, chunk.len()).unwrap()).unwrap();
        let d = rel_diff(&a, &b);
        assert!(
            d <= 1e-3,
            "chunk of {}: relative difference {d}",
            chunk.len()
        );
    }
    // Cut both caches back and continue differently: the device cache must forget as well.
    ck.truncate(30).unwrap();
    ct.truncate(30).unwrap();
    let tail = &ids[44..48];
    let a = logits_vec(&kernel.forward(tail, &mut ck, None, 1).unwrap()).unwrap();
    let b = logits_vec(&tensor.forward(tail, &mut ct, None, 1).unwrap()).unwrap();
    assert!(rel_diff(&a, &b) <= 1e-3);
    assert_eq!(ct.len(), 34);
    // And the same as a fresh pass over the same 34 tokens.
    let mut fresh = tensor.new_cache();
    let whole: Vec<u32> = ids[..30].iter().chain(tail).copied().collect();
    let c = logits_vec(&tensor.forward(&whole, &mut fresh, None, 1).unwrap()).unwrap();
    assert!(rel_diff(&b, &c) <= 1e-3);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_build_without_cuda_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::tiny_model(dir.path());
    match load_backend(BackendKind::Cuda, &path) {
        Err(e @ ModelError::Backend { .. }) => {
            assert!(e.to_string().contains("--features cuda"), "{e}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a build without the cuda feature loaded a cuda backend"),
    }
}

/// The CUDA backend against the CPU backend on the same file: logits after a prefill and
/// while decoding, and greedy tokens.
#[cfg(feature = "cuda")]
fn compare_cuda_with_cpu(path: &Path, prompt_len: usize, steps: usize, tolerance: f32) {
    let cpu = load_backend(BackendKind::Cpu, path).unwrap();
    let gpu = load_backend(BackendKind::Cuda, path).expect("a CUDA device");
    eprintln!("gpu backend: {:?}", gpu.info());
    let cancel = CancelToken::new();
    let (mut sc, mut sg) = (cpu.new_session(), gpu.new_session());
    let mut a = sc.feed(&prompt(prompt_len), &cancel).unwrap();
    let mut b = sg.feed(&prompt(prompt_len), &cancel).unwrap();
    let mut worst = 0f32;
    for _ in 0..steps {
        worst = worst.max(rel_diff(&a, &b));
        let next = nib_model::transformer::argmax(&a, &[]);
        a = sc.feed(&[next], &cancel).unwrap();
        b = sg.feed(&[next], &cancel).unwrap();
    }
    eprintln!(
        "cpu vs cuda, {}, {prompt_len}-token prompt, {steps} steps: worst relative difference {worst}",
        path.display()
    );
    assert!(worst <= tolerance, "cuda logits differ from cpu: {worst}");
    assert!(a.iter().chain(&b).all(|x| x.is_finite()));
}

/// F32 weights: the same math on both devices, so the GPU path (attention, KV cache, rope,
/// norms) must agree closely.
#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_cpu_with_f32_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f32.gguf");
    let cfg = nib_model::tiny::TinyConfig {
        n_layer: 4,
        n_embd: 128,
        n_head: 8,
        n_kv_head: 2,
        ffn: 256,
        f32_weights: true,
        ..Default::default()
    };
    nib_model::tiny::write(&path, &cfg).unwrap();
    compare_cuda_with_cpu(&path, 300, 20, 1e-3);
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_cpu_on_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    // Quantized weights: the CPU quantizes activations to int8 for its kernels, candle's CUDA
    // kernels do not, and random weights amplify the difference through the layers.
    compare_cuda_with_cpu(&common::tiny_model(dir.path()), 100, 20, 0.1);
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_cpu_at_the_real_model_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shapes.gguf");
    nib_model::tiny::write(&path, &nib_model::tiny::TinyConfig::qwen25_05b_shapes()).unwrap();
    // Quantized random weights over 24 layers: a smoke test (runs, finite, same shapes); the
    // difference is printed, and the F32 test above holds the tight bound.
    compare_cuda_with_cpu(&path, 300, 8, f32::INFINITY);
}
