//! Retrying work that failed for a reason that may pass (a lost connection,
//! a deadlock, an overloaded database). One policy type, [`Backoff`], says
//! how often and how patiently; one function, [`retry`], runs an operation
//! under it and tries again only on errors that say they are transient
//! ([`Transient`]). Each caller keeps its own policy value: the lanes' batch
//! commits, the model stage's writes and the summary stage's reads and writes
//! wait differently, but they all wait the same way.

use std::future::Future;
use std::time::Duration;

/// How often and how patiently to try an operation again: the first wait,
/// the factor each later wait grows by, the longest wait, how many attempts
/// in all, and how much random lengthening each wait gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The wait after the first failed attempt.
    pub first: Duration,
    /// Each later wait is the previous one times this (1 keeps it constant).
    pub factor: f64,
    /// No wait is longer than this before jitter.
    pub cap: Duration,
    /// Attempts in all, the first included; 0 or 1 never retries.
    pub attempts: u32,
    /// Each wait is lengthened by a random share of itself in
    /// `[0, jitter)`, so many callers that failed together (every lane in
    /// a database restart) do not retry together. Jitter only lengthens, so
    /// a policy's total patience is never less than its waits without it.
    pub jitter: f64,
}

impl Backoff {
    /// The wait after the `failed`-th failed attempt (1-based), before
    /// jitter; `None` once the attempts are used up.
    pub fn delay_after(&self, failed: u32) -> Option<Duration> {
        if failed == 0 || failed >= self.attempts {
            return None;
        }
        let exponent = i32::try_from(failed - 1).unwrap_or(i32::MAX);
        let grown = self.first.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        let capped = grown.min(self.cap.as_secs_f64()).max(0.0);
        Some(Duration::from_secs_f64(capped))
    }

    /// `delay` lengthened by the share `unit` (in `[0, 1)`) of the jitter.
    pub fn jittered(&self, delay: Duration, unit: f64) -> Duration {
        let share = self.jitter.max(0.0) * unit.clamp(0.0, 1.0);
        delay.mul_f64(1.0 + share)
    }

    /// The waits this policy makes, in order, before jitter.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        (1..self.attempts).filter_map(|failed| self.delay_after(failed))
    }
}

/// An error that knows whether the same work may succeed if tried again.
pub trait Transient {
    /// Whether another attempt may succeed.
    fn is_transient(&self) -> bool;
}

/// Runs `op` until it succeeds, fails with an error that is not transient,
/// or has used up the policy's attempts; the last outcome is returned.
/// Before each wait `on_retry` sees the error and the number of the attempt
/// that failed (to log it or count it).
pub async fn retry<T, E, F, Fut>(
    policy: &Backoff,
    mut op: F,
    mut on_retry: impl FnMut(&E, u32),
) -> Result<T, E>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut failed: u32 = 0;
    loop {
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        failed += 1;
        let delay = match policy.delay_after(failed) {
            Some(delay) if error.is_transient() => delay,
            _ => return Err(error),
        };
        on_retry(&error, failed);
        tokio::time::sleep(policy.jittered(delay, rand::random::<f64>())).await;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const POLICY: Backoff = Backoff {
        first: Duration::from_millis(100),
        factor: 2.0,
        cap: Duration::from_millis(500),
        attempts: 6,
        jitter: 0.0,
    };

    #[test]
    fn waits_grow_by_the_factor_up_to_the_cap() {
        let waits: Vec<u128> = POLICY.delays().map(|d| d.as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn attempts_count_the_first_one() {
        assert_eq!(POLICY.delay_after(5), Some(Duration::from_millis(500)));
        assert_eq!(POLICY.delay_after(6), None);
        assert_eq!(POLICY.delay_after(0), None);
        let once = Backoff {
            attempts: 1,
            ..POLICY
        };
        assert_eq!(once.delays().count(), 0);
    }

    #[test]
    fn a_factor_below_one_keeps_the_wait_constant() {
        let flat = Backoff {
            factor: 0.5,
            ..POLICY
        };
        assert!(flat.delays().all(|d| d == Duration::from_millis(100)));
    }

    #[test]
    fn jitter_only_lengthens_and_stays_within_its_share() {
        let jittery = Backoff {
            jitter: 0.5,
            ..POLICY
        };
        let base = Duration::from_millis(200);
        assert_eq!(jittery.jittered(base, 0.0), base);
        assert_eq!(jittery.jittered(base, 0.5), Duration::from_millis(250));
        assert_eq!(jittery.jittered(base, 1.0), Duration::from_millis(300));
        assert_eq!(POLICY.jittered(base, 0.9), base);
        for _ in 0..100 {
            let waited = jittery.jittered(base, rand::random::<f64>());
            assert!(waited >= base && waited <= Duration::from_millis(300));
        }
    }

    #[derive(Debug, PartialEq)]
    struct Failure {
        transient: bool,
    }

    impl Transient for Failure {
        fn is_transient(&self) -> bool {
            self.transient
        }
    }

    const QUICK: Backoff = Backoff {
        first: Duration::from_millis(1),
        factor: 2.0,
        cap: Duration::from_millis(2),
        attempts: 4,
        jitter: 0.1,
    };

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = Cell::new(0);
        let mut retried = Vec::new();
        let result = retry(
            &QUICK,
            || {
                calls.set(calls.get() + 1);
                let call = calls.get();
                async move {
                    if call < 3 {
                        Err(Failure { transient: true })
                    } else {
                        Ok(call)
                    }
                }
            },
            |_, attempt| retried.push(attempt),
        )
        .await;
        assert_eq!(result, Ok(3));
        assert_eq!(retried, vec![1, 2]);
    }

    #[tokio::test]
    async fn retries_stop_after_the_last_attempt() {
        let calls = Cell::new(0);
        let result: Result<(), Failure> = retry(
            &QUICK,
            || {
                calls.set(calls.get() + 1);
                async { Err(Failure { transient: true }) }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(result, Err(Failure { transient: true }));
        assert_eq!(calls.get(), QUICK.attempts);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = Cell::new(0);
        let result: Result<(), Failure> = retry(
            &QUICK,
            || {
                calls.set(calls.get() + 1);
                async { Err(Failure { transient: false }) }
            },
            |_, _| panic!("a permanent error is not retried"),
        )
        .await;
        assert_eq!(result, Err(Failure { transient: false }));
        assert_eq!(calls.get(), 1);
    }
}
