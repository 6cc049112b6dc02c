//! A few sessions, so that switching between files does not throw away the KV cache of the file
//! left behind. A prompt goes to the session whose cached tokens share the longest prefix with it
//! when that prefix covers at least half the prompt (the same file, typed on); otherwise to a
//! fresh session while there are fewer than `slots`, else to the least recently used one. The
//! cached tokens of all sessions together stay within `budget_tokens`: the least recently used
//! others are emptied first.

use crate::backend::{Backend, Session};

pub struct SessionPool {
    slots: Vec<Slot>,
    max_slots: usize,
    budget_tokens: usize,
    clock: u64,
}

struct Slot {
    session: Box<dyn Session>,
    used: u64,
}

/// Tokens `a` and `b` share at their start.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl SessionPool {
    /// `slots` sessions at most (at least one), `budget_tokens` cached tokens at most in all.
    pub fn new(slots: usize, budget_tokens: usize) -> Self {
        Self {
            slots: Vec::new(),
            max_slots: slots.max(1),
            budget_tokens,
            clock: 0,
        }
    }

    /// The number of sessions open now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Cached tokens of every session together.
    pub fn cached_tokens(&self) -> usize {
        self.slots.iter().map(|s| s.session.tokens().len()).sum()
    }

    /// The session `prompt` should run in.
    pub fn pick(&mut self, backend: &dyn Backend, prompt: &[u32]) -> &mut dyn Session {
        self.clock += 1;
        let chosen = self.choose(backend, prompt, None, |common| common * 2 >= prompt.len());
        self.slots[chosen].used = self.clock;
        let own = prompt.len().max(self.slots[chosen].session.tokens().len());
        self.keep_budget(backend, chosen, own);
        self.slots[chosen].session.as_mut()
    }

    /// The slot for `prompt`, never `reserved` while there is another: the one that shares the
    /// longest prefix with it if that is `enough`, else a new one while there is room, else the
    /// least recently used.
    fn choose(
        &mut self,
        backend: &dyn Backend,
        prompt: &[u32],
        reserved: Option<usize>,
        enough: impl Fn(usize) -> bool,
    ) -> usize {
        let best = self
            .slots
            .iter()
            .enumerate()
            .filter(|&(i, _)| Some(i) != reserved)
            .map(|(i, s)| (common_prefix(s.session.tokens(), prompt), i))
            .max();
        match best {
            Some((common, i)) if enough(common) => i,
            _ if self.slots.len() < self.max_slots => {
                self.slots.push(Slot {
                    session: backend.new_session(),
                    used: 0,
                });
                self.slots.len() - 1
            }
            _ => self
                .slots
                .iter()
                .enumerate()
                .filter(|&(i, _)| Some(i) != reserved)
                .min_by_key(|(_, s)| s.used)
                .map_or(reserved.unwrap_or(0), |(i, _)| i),
        }
    }

    /// Keeps the total within the budget, `chosen` holding `own` tokens: empties the least
    /// recently used others.
    fn keep_budget(&mut self, backend: &dyn Backend, chosen: usize, own: usize) {
        loop {
            let others: usize = self
                .slots
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != chosen)
                .map(|(_, s)| s.session.tokens().len())
                .sum();
            if own + others <= self.budget_tokens {
                break;
            }
            let Some(victim) = self.least_recent(Some(chosen)) else {
                break;
            };
            // A new session rather than a truncated one: its memory goes back, not just its length.
            self.slots[victim].session = backend.new_session();
        }
    }

    /// The most prompt tokens any session holds already: what `pick` can reuse at best.
    pub fn best_reuse(&self, prompt: &[u32]) -> usize {
        self.slots
            .iter()
            .map(|s| common_prefix(s.session.tokens(), prompt))
            .max()
            .unwrap_or(0)
    }

    /// The session to compute `prompt` in ahead of its use, leaving the most recently used one
    /// (which serves the requests of now) alone: the one other session that shares the most
    /// with it, a new one while there is room, else the least recently used other one. It does
    /// not become the most recently used.
    pub fn pick_background(&mut self, backend: &dyn Backend, prompt: &[u32]) -> &mut dyn Session {
        let recent = self
            .slots
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.used)
            .map(|(i, _)| i);
        let chosen = self.choose(backend, prompt, recent, |common| common > 0);
        let own = prompt.len().max(self.slots[chosen].session.tokens().len());
        self.keep_budget(backend, chosen, own);
        self.slots[chosen].session.as_mut()
    }

    /// The least recently used slot that holds tokens, other than `except`.
    fn least_recent(&self, except: Option<usize>) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|&(i, s)| {
                Some(i) != except && (except.is_none() || !s.session.tokens().is_empty())
            })
            .min_by_key(|(_, s)| s.used)
            .map(|(i, _)| i)
    }
}
