//! One quantized matmul at a linear layer's shape, random weights and activations, for counting
//! a kernel's instructions where timings are noisy (a shared machine, another job running):
//!
//! `NIB_KERNELS=avx2 valgrind --tool=callgrind --toggle-collect='*tile_dot*' \
//!   target/release/examples/matmul_once q4k 8960 1536 128`
//!
//! Arguments: format (q4_0, q5_0, q8_0, q4k, q6k), rows n, columns k, activation rows m, and
//! optionally a number of repetitions: then it also prints their median time (for a quick A/B
//! on a quiet machine).
//! Instruction counts are repeatable for the same binary and inputs; they are a proxy for time
//! (they do not see cache misses or port pressure), not a measurement of it.
use nib_model::kernels::{self, Format, QWeight};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: matmul_once q4_0|q5_0|q8_0|q4k|q6k N K M [REPS]";
    let (args, reps) = match &args[..] {
        [a @ .., r] if args.len() == 5 => (a, r.parse::<usize>().ok()),
        a => (a, None),
    };
    let [format, n, k, m] = args else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let format = match format.as_str() {
        "q4_0" => Format::Q4_0,
        "q5_0" => Format::Q5_0,
        "q8_0" => Format::Q8_0,
        "q4k" => Format::Q4K,
        "q6k" => Format::Q6K,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let parse = |s: &str| s.parse::<usize>().unwrap_or_else(|_| panic!("{usage}"));
    let (n, k, m) = (parse(n), parse(k), parse(m));
    // A small xorshift: the same bytes on every run.
    let mut state = 0x5eedu64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut data: Vec<u8> = (0..n * k / format.block_elems() * format.block_bytes())
        .map(|_| next() as u8)
        .collect();
    // Finite scales: a small f16 (0x2000 ≈ 0.0078) where each format keeps its scales.
    let scales: &[usize] = match format {
        Format::Q4K => &[0, 2],
        Format::Q6K => &[208],
        _ => &[0],
    };
    for blk in data.chunks_exact_mut(format.block_bytes()) {
        for &at in scales {
            blk[at..at + 2].copy_from_slice(&0x2000u16.to_le_bytes());
        }
    }
    let w = QWeight::new(format, n, k, data).expect("whole blocks");
    let x: Vec<f32> = (0..m * k)
        .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect();
    let mut out = vec![0f32; m * n];
    kernels::matmul(&x, m, &w, &mut out);
    if let Some(reps) = reps {
        let mut ms: Vec<f64> = (0..reps)
            .map(|_| {
                let t = std::time::Instant::now();
                kernels::matmul(&x, m, &w, &mut out);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!("median {:.3} ms of {reps}", ms[reps / 2]);
    }
    println!(
        "{format:?} on {}: {m}×{k} · ({n}×{k})ᵀ, out[0] = {}",
        kernels::path().name(),
        out[0]
    );
}
