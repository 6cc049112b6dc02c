//! A cancel during a long prefill with the real model stops it part way, and the session stays
//! usable.

mod common;

use nib_model::{generate, load_backend, BackendKind, CancelToken, GenerateParams, ModelError};
use std::time::Duration;

#[test]
fn cancel_during_a_2k_token_prefill_stops_it() {
    let backend = load_backend(BackendKind::Cpu, &common::real_model()).expect("load model");
    let tok = backend.tokenizer().clone();
    let text = include_str!("../src/transformer.rs").repeat(4);
    let ids = tok.encode(&text);
    let prompt = &ids[..2048.min(ids.len())];
    assert_eq!(prompt.len(), 2048);
    let params = GenerateParams::new(&tok, vec![], 4, false);
    let cancel = CancelToken::new();
    let mut session = backend.new_session();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            cancel.cancel();
        })
    };
    let r = generate(session.as_mut(), &tok, prompt, &params, &cancel);
    canceller.join().unwrap();
    assert!(
        matches!(r, Err(ModelError::Cancelled)),
        "{:?}",
        r.map(|g| g.text)
    );
    // Stopped part way: the cache holds whole chunks only, well short of the prompt.
    let done = session.tokens().len();
    assert!(
        done < prompt.len() / 2,
        "{done} of {} tokens were prefilled",
        prompt.len()
    );
    assert_eq!(session.tokens(), &prompt[..done]);
    // And the session still works.
    let g = generate(
        session.as_mut(),
        &tok,
        &prompt[..64],
        &params,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(g.tokens.len(), 4);
}
