//! The decoding loop: reuse the session's cached prefix, prefill the rest in chunks, then decode
//! greedily until a stop rule fires. Cancellation is checked between chunks and between tokens.

use crate::backend::Session;
use crate::error::{ModelError, Result};
use crate::tokenizer::Tokenizer;
use crate::transformer::argmax;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Shared flag a caller sets to stop a generation at the next check.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    /// Tokens that end the completion (not part of it).
    pub stops: Vec<u32>,
    /// Tokens never emitted (special tokens that are not stops).
    pub banned: Vec<u32>,
    /// End at the first newline that follows some non-blank text.
    pub single_line: bool,
    /// Prompt tokens per forward pass while prefilling (bounds memory, paces cancellation).
    pub prefill_chunk: usize,
    /// Called with the text so far after each token; `Some(len)` ends the completion there.
    pub stop_check: Option<StopCheck>,
    /// Prompt-lookup speculation: at most this many draft tokens, copied from the context where
    /// its last tokens occurred before, are checked in one pass. 0 turns it off. The output is
    /// the same as without it: a draft token is kept only where greedy decoding picks it.
    pub draft_len: usize,
    /// A multi-line generation calls this once, with the text up to the end of the first line
    /// that holds text, as soon as that line is complete (and goes on generating): how a
    /// caller shows the first line of a block before the block is done.
    pub on_first_line: Option<FirstLine>,
    /// Called with the text so far before each token is decoded; `false` stops the generation
    /// as cancelled (its output is no longer wanted: e.g. the user typed something else).
    pub keep_going: Option<KeepGoing>,
    /// Token healing: text the caller took off the end of the prompt (its last token, which
    /// may be a piece of a longer one). The first tokens are chosen among those that agree with
    /// it, so the model may write `.push` where the prompt ended in `.`; this text is not part
    /// of the output, which starts where the prompt's text ended.
    pub heal: Vec<u8>,
}

/// A caller's own stop rule over the generated text (e.g. "the block has ended").
pub type StopCheck = Arc<dyn Fn(&str) -> Option<usize> + Send + Sync>;

/// See [`GenerateParams::on_first_line`].
pub type FirstLine = Arc<dyn Fn(&str) + Send + Sync>;

/// See [`GenerateParams::keep_going`].
pub type KeepGoing = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl GenerateParams {
    /// Stops on `stops`, and bans every other special token of the vocabulary.
    pub fn new(tok: &Tokenizer, stops: Vec<u32>, max_tokens: usize, single_line: bool) -> Self {
        let banned = tok
            .special_ids()
            .iter()
            .copied()
            .filter(|id| !stops.contains(id))
            .collect();
        Self {
            max_tokens,
            stops,
            banned,
            single_line,
            prefill_chunk: 128,
            stop_check: None,
            draft_len: 0,
            on_first_line: None,
            keep_going: None,
            heal: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    StopToken,
    EndOfLine,
    EndOfBlock,
    MaxTokens,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused from the session.
    pub reused_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// Set when the prompt had to be cut to fit the context.
    pub warning: Option<String>,
    /// Speculation: draft tokens proposed, and how many of them greedy decoding kept.
    pub drafted: usize,
    pub accepted: usize,
}

/// The greedy token among those that agree with `owed`, text still to be written back (token
/// healing): its bytes begin with `owed` or are a beginning of `owed`. Never a special token.
/// With `line_start`, what a token adds after `owed` may not end the line before it holds text
/// (a line break after nothing but spaces): the healed text ended a line, the cursor's line is
/// where the completion goes, and a blank line there is what healing must not invent (after a
/// docstring's `"""\n` the model would rather end the function). An empty `owed` then picks
/// the best token that does not leave the line blank.
pub fn argmax_agreeing(logits: &[f32], tok: &Tokenizer, owed: &[u8], line_start: bool) -> u32 {
    let mut best = None::<(u32, f32)>;
    for (i, &x) in logits.iter().enumerate().take(tok.vocab_size()) {
        if best.is_some_and(|(_, b)| x <= b) {
            continue;
        }
        let id = i as u32;
        let b = tok.token_bytes(id);
        if b.is_empty() || tok.is_special(id) {
            continue;
        }
        let agrees = match b.strip_prefix(owed) {
            Some(more) => !(line_start && breaks_a_blank_line(more)),
            None => owed.starts_with(b),
        };
        if agrees {
            best = Some((id, x));
        }
    }
    // Every byte is a token of a byte-level vocabulary, so some token agrees; a vocabulary
    // without one gets the plain choice.
    best.map_or_else(|| argmax(logits, &[]), |(id, _)| id)
}

/// Whether `text` has a line break before any text other than spaces and tabs.
fn breaks_a_blank_line(text: &[u8]) -> bool {
    text.iter()
        .find(|c| !matches!(c, b' ' | b'\t'))
        .is_some_and(|c| matches!(c, b'\n' | b'\r'))
}

/// Draft tokens for prompt-lookup speculation: where the last 3 (else 2) tokens of `context`
/// occurred before, the up to `max` tokens that followed them (the latest occurrence wins).
pub fn lookup_draft(context: &[u32], max: usize) -> Vec<u32> {
    for n in [3usize, 2] {
        if context.len() <= n || max == 0 {
            continue;
        }
        let tail = &context[context.len() - n..];
        let end = context.len() - n;
        if let Some(start) = (0..end).rev().find(|&i| &context[i..i + n] == tail) {
            let from = start + n;
            return context[from..(from + max).min(context.len())].to_vec();
        }
    }
    Vec::new()
}

/// Cuts a prompt that leaves no room for `max_tokens` in a context of `limit`: tokens go from the
/// left, after the first one (the layout's opening marker).
pub fn fit_context(prompt: &[u32], max_tokens: usize, limit: usize) -> (Vec<u32>, Option<String>) {
    let keep = limit.saturating_sub(max_tokens).max(2);
    if prompt.len() <= keep {
        return (prompt.to_vec(), None);
    }
    let cut = prompt.len() - keep;
    let mut out = Vec::with_capacity(keep);
    out.push(prompt[0]);
    out.extend_from_slice(&prompt[1 + cut..]);
    let warning = format!(
        "prompt of {} tokens does not fit the context of {limit} with {max_tokens} to generate: \
         cut {cut} tokens from its start",
        prompt.len()
    );
    (out, Some(warning))
}

/// Generates a completion of `prompt` in `session`.
pub fn generate(
    session: &mut dyn Session,
    tok: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    cancel: &CancelToken,
) -> Result<Generation> {
    generate_with_draft(session, None, tok, prompt, params, cancel)
}

/// Brings `session` to `tokens`: the cached common prefix stays (at least the last token is fed,
/// for its logits), the rest is prefilled in chunks of `chunk`, with `cancel` checked between
/// them; a rest of at most two chunks goes in one pass (no small trailing piece, which would
/// stream the weights once more for a few tokens). Returns the tokens reused and the logits
/// after the last token.
fn prefill(
    session: &mut dyn Session,
    tokens: &[u32],
    chunk: usize,
    cancel: &CancelToken,
) -> Result<(usize, Vec<f32>)> {
    let common = crate::pool::common_prefix(session.tokens(), tokens).min(tokens.len() - 1);
    session.truncate(common)?;
    let mut logits = Vec::new();
    let rest = &tokens[common..];
    let chunk = if rest.len() <= 2 * chunk {
        rest.len()
    } else {
        chunk.max(1)
    };
    let chunks: Vec<&[u32]> = rest.chunks(chunk).collect();
    for (c, piece) in chunks.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        if c + 1 < chunks.len() {
            session.feed_all(piece, 0, cancel)?;
        } else {
            logits = session.feed(piece, cancel)?;
        }
    }
    Ok((common, logits))
}

/// Greedy tokens from a draft model: `draft` is brought to `context` ([`prefill`]), then runs
/// `k` steps from it. The draft model must share the target's vocabulary.
fn draft_model_tokens(
    draft: &mut dyn Session,
    context: &[u32],
    k: usize,
    params: &GenerateParams,
    cancel: &CancelToken,
) -> Result<Vec<u32>> {
    let (_, mut logits) = prefill(draft, context, params.prefill_chunk, cancel)?;
    let mut out = Vec::with_capacity(k);
    while out.len() < k && draft.tokens().len() < draft.context_length() {
        let t = argmax(&logits, &params.banned);
        out.push(t);
        if out.len() < k {
            logits = draft.feed(&[t], cancel)?;
        }
    }
    Ok(out)
}

/// [`generate`], with speculation by a draft model when `draft` is given and
/// `params.draft_len > 0`: the draft model proposes `draft_len` tokens, the target checks them in
/// one pass and keeps those it would have picked itself, so the output is the target's greedy
/// output exactly. Without a draft session, `draft_len` means prompt-lookup speculation.
pub fn generate_with_draft(
    session: &mut dyn Session,
    mut draft_session: Option<&mut dyn Session>,
    tok: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    cancel: &CancelToken,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(ModelError::Inference("empty prompt".into()));
    }
    let (prompt, warning) = fit_context(prompt, params.max_tokens, session.context_length());
    let prompt = &prompt[..];
    let t0 = Instant::now();
    let (common, mut logits) = prefill(session, prompt, params.prefill_chunk, cancel)?;
    // The draft model reads the prompt now too, so that drafting starts at once.
    if let (Some(d), true) = (draft_session.as_deref_mut(), params.draft_len > 0) {
        draft_model_tokens(d, prompt, 0, params, cancel)?;
    }
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;

    let t1 = Instant::now();
    let mut tokens: Vec<u32> = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    let mut stop = StopReason::MaxTokens;
    let (mut drafted, mut accepted) = (0, 0);
    let first_line_told = std::cell::Cell::new(params.single_line);
    // Bytes of `params.heal` written back so far; the output (`bytes`) starts after them.
    let healed = std::cell::Cell::new(0usize);
    let owed = || &params.heal[healed.get()..];
    // A healed line break: the completion starts a line and must not start with a blank one.
    let heals_line = params.heal.ends_with(b"\n");
    // Healing goes on while text is owed, or while a healed line holds only spaces: the next
    // token is then chosen among those that agree (`argmax_agreeing`), never drafted.
    let healing = |written: &[u8]| {
        !owed().is_empty() || (heals_line && written.iter().all(|c| matches!(c, b' ' | b'\t')))
    };
    let pick = |logits: &[f32], written: &[u8]| {
        if healing(written) {
            argmax_agreeing(logits, tok, owed(), heals_line)
        } else {
            argmax(logits, &params.banned)
        }
    };
    // Applies the stop rules to one more token; `Some(reason)` ends the completion.
    let emit = |t: u32, tokens: &mut Vec<u32>, bytes: &mut Vec<u8>| -> Option<StopReason> {
        if params.stops.contains(&t) {
            return Some(StopReason::StopToken);
        }
        tokens.push(t);
        let mut piece = tok.token_bytes(t);
        let back = piece.len().min(owed().len());
        healed.set(healed.get() + back);
        piece = &piece[back..];
        bytes.extend_from_slice(piece);
        if params.single_line {
            if let Some(end) = end_of_first_line(bytes) {
                bytes.truncate(end);
                return Some(StopReason::EndOfLine);
            }
        }
        if let Some(check) = &params.stop_check {
            let text = String::from_utf8_lossy(bytes).into_owned();
            if let Some(end) = check(&text) {
                *bytes = text.as_bytes()[..end.min(text.len())].to_vec();
                return Some(StopReason::EndOfBlock);
            }
        }
        if let (false, Some(tell)) = (first_line_told.get(), &params.on_first_line) {
            if let Some(end) = end_of_first_line(bytes) {
                first_line_told.set(true);
                tell(&String::from_utf8_lossy(&bytes[..end]));
            }
        }
        (tokens.len() >= params.max_tokens).then_some(StopReason::MaxTokens)
    };
    let mut next = pick(&logits, &[]);
    'decode: loop {
        if params.max_tokens == 0 {
            break;
        }
        if cancel.is_cancelled()
            || params
                .keep_going
                .as_ref()
                .is_some_and(|keep| !keep(&String::from_utf8_lossy(&bytes)))
        {
            return Err(ModelError::Cancelled);
        }
        if let Some(reason) = emit(next, &mut tokens, &mut bytes) {
            stop = reason;
            break;
        }
        let room = params.max_tokens - tokens.len();
        // No drafts while healing: a draft is checked by the plain choice.
        let draft = if params.draft_len > 0 && room > 1 && !healing(&bytes) {
            let mut context = session.tokens().to_vec();
            context.push(next);
            let k = params.draft_len.min(room - 1);
            match draft_session.as_deref_mut() {
                Some(d) => draft_model_tokens(d, &context, k, params, cancel)?,
                None => lookup_draft(&context, k),
            }
        } else {
            Vec::new()
        };
        if draft.is_empty() {
            logits = session.feed(&[next], cancel)?;
            next = pick(&logits, &bytes);
            continue;
        }
        // Check the draft in one pass: the logits after `next` and after each draft token.
        let base = session.tokens().len();
        let mut batch = vec![next];
        batch.extend_from_slice(&draft);
        let all = session.feed_all(&batch, batch.len(), cancel)?;
        drafted += draft.len();
        let mut kept = 0;
        while kept < draft.len() && argmax(&all[kept], &params.banned) == draft[kept] {
            kept += 1;
        }
        accepted += kept;
        // Forget the rejected draft tokens; `next` and the kept ones stay cached.
        session.truncate(base + 1 + kept)?;
        for &t in &draft[..kept] {
            if let Some(reason) = emit(t, &mut tokens, &mut bytes) {
                stop = reason;
                break 'decode;
            }
        }
        next = argmax(&all[kept], &params.banned);
    }
    Ok(Generation {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        tokens,
        stop,
        prompt_tokens: prompt.len(),
        reused_tokens: common,
        prefill_ms,
        decode_ms: t1.elapsed().as_secs_f64() * 1e3,
        warning,
        drafted,
        accepted,
    })
}

/// Byte index of the first `\n` that follows non-blank text, if any.
pub fn end_of_first_line(bytes: &[u8]) -> Option<usize> {
    let mut seen_text = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' if seen_text => {
                return Some(if i > 0 && bytes[i - 1] == b'\r' {
                    i - 1
                } else {
                    i
                })
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => seen_text = true,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{end_of_first_line, fit_context, lookup_draft};

    #[test]
    fn drafts_come_from_the_latest_earlier_match() {
        // (context, max, draft)
        let cases: &[(&[u32], usize, &[u32])] = &[
            (&[1, 2, 3, 4, 5, 9, 1, 2, 3], 2, &[4, 5]),
            (&[1, 2, 3, 7, 1, 2, 3, 8, 1, 2, 3], 3, &[8, 1, 2]),
            (&[5, 6, 9, 9, 5, 6], 4, &[9, 9, 5, 6]),
            (&[1, 2, 3, 4], 4, &[]),
            (&[1, 2, 3, 1, 2], 0, &[]),
        ];
        for (context, max, want) in cases {
            assert_eq!(lookup_draft(context, *max), *want, "{context:?}");
        }
    }

    #[test]
    fn long_prompts_lose_their_start_but_keep_the_marker() {
        let prompt: Vec<u32> = (0..100).collect();
        let (p, w) = fit_context(&prompt, 10, 200);
        assert_eq!((p.len(), w), (100, None));
        let (p, w) = fit_context(&prompt, 10, 60);
        assert_eq!(p.len(), 50);
        assert_eq!(p[0], 0);
        assert_eq!(p[1..], prompt[51..]);
        assert!(w.unwrap().contains("cut 50 tokens"));
    }

    #[test]
    fn first_line_ends_after_text() {
        let cases: &[(&str, Option<usize>)] = &[
            ("foo()\nbar", Some(5)),
            ("\n    foo()\nbar", Some(10)),
            ("  \n\n", None),
            ("foo()", None),
            ("x\r\ny", Some(1)),
        ];
        for (text, want) in cases {
            assert_eq!(end_of_first_line(text.as_bytes()), *want, "{text:?}");
        }
    }
}
