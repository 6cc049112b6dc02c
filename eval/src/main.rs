//! `nib-eval`: not built yet; see issue 6. Exits with an error rather than pretending to measure.

fn main() -> std::process::ExitCode {
    eprintln!("nib-eval: no benchmarks are implemented yet (planned: humaneval-infill, santacoder-fim, humaneval-rust, repo-rust, replay)");
    std::process::ExitCode::from(2)
}
