//! Exponential backoff with full jitter, for every reconnect loop: each wait is a random time
//! up to the current ceiling, which doubles up to a maximum, so that many processes reconnecting
//! to a restarted backend do not arrive together; and [`retry`], an attempt repeated with it.

use std::{future::Future, time::Duration};

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { first, max, ceiling: first }
    }

    /// The next wait: random in [0, ceiling], then the ceiling doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.ceiling.mul_f64(rand::rng().random_range(0.0..=1.0));
        self.ceiling = (self.ceiling * 2).min(self.max);
        delay
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// After a success: start small again.
    pub fn reset(&mut self) {
        self.ceiling = self.first;
    }
}

/// Retries `attempt` with backoff until it succeeds or `stop` is cancelled (then `None`).
pub async fn retry<T, E: std::fmt::Display, F, Fut>(what: &str, stop: &CancellationToken, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                tokio::select! {
                    () = backoff.wait() => {}
                    () = stop.cancelled() => return None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for ceiling in ceilings {
            assert!(b.next_delay() <= Duration::from_millis(ceiling));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
