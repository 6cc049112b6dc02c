//! Writes a GGUF file with the shapes of Qwen2.5-Coder-0.5B and random weights (Q5_0/Q8_0, as in
//! the real file), for benchmarking a backend on a machine the real model cannot be copied to:
//! `cargo run --release -p nib-model --example shapes_model -- /tmp/shapes.gguf`.

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: shapes_model OUT.gguf");
        std::process::exit(2);
    };
    let cfg = nib_model::tiny::TinyConfig::qwen25_05b_shapes();
    if let Err(e) = nib_model::tiny::write(std::path::Path::new(&path), &cfg) {
        eprintln!("shapes_model: {e}");
        std::process::exit(1);
    }
}
