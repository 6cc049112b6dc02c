//! What one keystroke costs the model: a ~1,000-token FIM prompt (64-token suffix) is computed
//! once, then a character is typed at the cursor again and again and each prompt's prefill
//! (the reused prefix's KV cache kept) is timed. For profiling the keystroke path:
//!
//! `cargo run --release -p nib-model --example keystroke [SUFFIX_TOKENS] [KEYSTROKES]`
use nib_model::prompt::{self, FimTokens, PromptParts};
use nib_model::{generate, BackendKind, CancelToken, GenerateParams};

fn main() {
    let mut args = std::env::args().skip(1);
    let suffix_tokens: usize = args.next().map_or(64, |a| a.parse().unwrap());
    let keystrokes: usize = args.next().map_or(20, |a| a.parse().unwrap());
    let path = nib_model::fetch::model_from_env().expect("the default model");
    let backend = nib_model::load_backend(BackendKind::Cpu, &path).expect("load");
    let tok = backend.tokenizer().clone();
    let fim = FimTokens::detect(&tok).unwrap();
    let text = include_str!("../src/transformer.rs");
    let ids = tok.encode(text);
    let prefix = tok.decode(&ids[..940]);
    let suffix = tok.decode(&ids[1000..1000 + suffix_tokens]);
    let mut session = backend.new_session();
    let params = GenerateParams::new(&tok, fim.stops.clone(), 1, true);
    let cancel = CancelToken::new();
    let mut typed = prefix.clone();
    let mut times = Vec::new();
    for i in 0..=keystrokes {
        let parts = PromptParts {
            prefix: typed.clone(),
            suffix: suffix.clone(),
            ..Default::default()
        };
        let p = prompt::build(&tok, &fim, &parts);
        let g = generate(session.as_mut(), &tok, &p, &params, &cancel).unwrap();
        if i > 0 {
            times.push(g.prefill_ms);
            eprintln!(
                "{} tokens, {} reused, prefill {:.1} ms",
                p.len(),
                g.reused_tokens,
                g.prefill_ms
            );
        }
        typed.push(if i % 5 == 4 { ' ' } else { 'x' });
    }
    times.sort_by(f64::total_cmp);
    println!(
        "median prefill per keystroke: {:.1} ms",
        times[times.len() / 2]
    );
}
