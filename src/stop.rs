//! Cooperative stopping: the caller (the CLI's signal handler) asks an apply
//! to stop; the pipeline stops where it is safe and keeps [`Phase`] current
//! so a second, impatient request can say what the host holds.
//!
//! Owns: the shared flag, its wake-up, and the phase. No signals here: the
//! library does not know where a stop request comes from.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// Where an apply is, as far as the config on the host is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing was written: the old config is in place.
    Untouched = 0,
    /// The new config is being written (old or new, atomically).
    Writing = 1,
    /// The new config is in place.
    NewInPlace = 2,
    /// The old config is being put back.
    RollingBack = 3,
    /// The old config was put back.
    Restored = 4,
}

#[derive(Debug, Default)]
struct Inner {
    stop: AtomicBool,
    phase: AtomicU8,
    wake: tokio::sync::Notify,
}

/// A stop request shared between the caller and one apply. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<Inner>);

impl Stop {
    /// Ask the apply to stop safely.
    pub fn request(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.wake.notify_waiters();
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.stop.load(Ordering::SeqCst)
    }

    /// Resolves once a stop is requested (at once if it already was).
    pub async fn wait(&self) {
        loop {
            let notified = self.0.wake.notified();
            if self.requested() {
                return;
            }
            notified.await;
        }
    }

    /// Run `fut` unless a stop comes first (`None`).
    pub async fn race<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            () = self.wait() => None,
            r = fut => Some(r),
        }
    }

    /// Record the phase (the pipeline does this).
    pub fn set_phase(&self, p: Phase) {
        self.0.phase.store(p as u8, Ordering::SeqCst);
    }

    /// The last recorded phase.
    pub fn phase(&self) -> Phase {
        match self.0.phase.load(Ordering::SeqCst) {
            1 => Phase::Writing,
            2 => Phase::NewInPlace,
            3 => Phase::RollingBack,
            4 => Phase::Restored,
            _ => Phase::Untouched,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn race_stops_a_pending_future_and_wait_returns_after_request() {
        let s = Stop::default();
        let s2 = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            s2.request();
        });
        assert_eq!(s.race(std::future::pending::<()>()).await, None);
        assert!(s.requested());
        s.wait().await;
        assert_eq!(
            s.race(async { 7 }).await,
            None,
            "already stopped: the stop wins"
        );
        s.set_phase(Phase::NewInPlace);
        assert_eq!(s.phase(), Phase::NewInPlace);
    }
}
