//! The whole real model on every kernel path this CPU has (the scalar reference included):
//! bit-identical logits for a prompt and for the tokens decoded after it, so that a completion
//! does not depend on the CPU it runs on. Under `NIB_KERNELS=…` the model loads the same way;
//! only the matmuls' path changes here.

mod common;

use candle_core::Device;
use nib_model::gguf::GgufFile;
use nib_model::kernels::{self, Path};
use nib_model::transformer::{logits_vec, Transformer};
use nib_model::Tokenizer;

#[test]
fn every_path_gives_the_same_logits_on_the_real_model() {
    let path = common::real_model();
    let mut g = GgufFile::open(&path).expect("open model");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let model = Transformer::load(&mut g, &Device::Cpu).expect("load model");
    assert_ne!(model.kernels(), "candle", "nib's kernels serve the CPU");
    let prompt = tok.encode("fn parse_header(line: &str) -> Option<(String, String)> {\n    let (name, value) = line.split_once(':')?;\n");
    let run = |p: Path| {
        kernels::with_path(p, || {
            let mut cache = model.new_cache();
            let mut logits =
                vec![logits_vec(&model.forward(&prompt, &mut cache, None, 1).unwrap()).unwrap()];
            for _ in 0..3 {
                let next = nib_model::transformer::argmax(logits.last().unwrap(), &[]);
                logits.push(
                    logits_vec(&model.forward(&[next], &mut cache, None, 1).unwrap()).unwrap(),
                );
            }
            logits
        })
    };
    let paths = Path::available();
    eprintln!("paths: {paths:?}");
    assert!(paths.contains(&Path::Scalar));
    let want = run(Path::Scalar);
    for &p in paths.iter().filter(|&&p| p != Path::Scalar) {
        let got = run(p);
        for (step, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{p:?}: the logits of step {step} differ from the scalar path's"
            );
        }
    }
}
