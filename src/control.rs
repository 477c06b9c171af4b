//! Run control for long work: a thread-safe cancel token and a progress callback.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A cancel flag that may be set from any thread while a run is in progress.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A new, unset token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests cancellation; the run stops at its next check (once per optimisation step).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    /// Clears the flag so the token can be reused.
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst)
    }
    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Progress callback: `(done, total) -> keep going`. Returning `false` cancels the run.
pub type ProgressFn<'a> = dyn FnMut(u32, u32) -> bool + 'a;

/// How a caller observes and stops a long run. `RunControl::default()` does neither.
#[derive(Default)]
pub struct RunControl<'a> {
    /// Checked before every step.
    pub cancel: Option<CancelToken>,
    /// Called after every step with the number of steps done and the total.
    pub progress: Option<Box<ProgressFn<'a>>>,
}

impl<'a> RunControl<'a> {
    /// A control with only a progress callback.
    pub fn with_progress(f: impl FnMut(u32, u32) -> bool + 'a) -> Self {
        RunControl { cancel: None, progress: Some(Box::new(f)) }
    }

    /// Fails with [`Error::Cancelled`] if the token is set.
    pub fn check(&self) -> Result<()> {
        match &self.cancel {
            Some(t) if t.is_cancelled() => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }

    /// Reports progress; fails with [`Error::Cancelled`] if the callback asks to stop or the
    /// token is set.
    pub fn report(&mut self, done: u32, total: u32) -> Result<()> {
        if let Some(p) = self.progress.as_mut() {
            if !p(done, total) {
                return Err(Error::Cancelled);
            }
        }
        self.check()
    }
}

/// Counts steps across the several optimisations of one run so progress is monotone.
pub(crate) struct StepCounter<'c, 'a> {
    pub control: &'c mut RunControl<'a>,
    pub done: u32,
    pub total: u32,
}

impl StepCounter<'_, '_> {
    pub fn step(&mut self) -> Result<()> {
        self.done += 1;
        self.control.report(self.done, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_token_and_progress_stop_runs() {
        let t = CancelToken::new();
        let mut c = RunControl { cancel: Some(t.clone()), progress: None };
        assert!(c.report(1, 2).is_ok());
        t.cancel();
        assert!(matches!(c.report(2, 2), Err(Error::Cancelled)));
        t.reset();
        let mut n = 0;
        let mut c = RunControl::with_progress(|d, _| {
            n = d;
            d < 3
        });
        assert!(c.report(2, 5).is_ok());
        assert!(matches!(c.report(3, 5), Err(Error::Cancelled)));
        drop(c);
        assert_eq!(n, 3);
    }
}
