//! The per-session inbound rate limit: a token bucket of client frames. Frames beyond the bucket
//! are refused with `error rate_limited`; a client that goes on for another full bucket of
//! refused frames is closed with 4008.

/// What to do with one inbound frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Refuse,
    Close,
}

/// Twelve bytes per session: tokens in thousandths, the last refill time and refusals in a row.
#[derive(Debug, Clone, Copy)]
pub struct RateBucket {
    milli_tokens: u32,
    /// Node clock (ms) of the last refill, truncated; wrapping arithmetic handles the overflow.
    refilled_ms: u32,
    refused: u32,
}

impl RateBucket {
    pub fn full(burst: u32, now_ms: u64) -> Self {
        Self { milli_tokens: burst.saturating_mul(1000), refilled_ms: now_ms as u32, refused: 0 }
    }

    pub fn admit(&mut self, now_ms: u64, per_s: u32, burst: u32) -> Verdict {
        let now = now_ms as u32;
        let elapsed = now.wrapping_sub(self.refilled_ms);
        if elapsed > 0 {
            let cap = burst.saturating_mul(1000);
            let refill = u64::from(elapsed) * u64::from(per_s);
            self.milli_tokens = (u64::from(self.milli_tokens) + refill).min(u64::from(cap)) as u32;
            self.refilled_ms = now;
            if self.milli_tokens == cap {
                self.refused = 0;
            }
        }
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            return Verdict::Allow;
        }
        self.refused += 1;
        if self.refused > burst { Verdict::Close } else { Verdict::Refuse }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_refusals_then_close() {
        let mut b = RateBucket::full(3, 0);
        let verdicts: Vec<_> = (0..8).map(|_| b.admit(0, 10, 3)).collect();
        use Verdict::*;
        assert_eq!(verdicts, vec![Allow, Allow, Allow, Refuse, Refuse, Refuse, Close, Close]);
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let mut b = RateBucket::full(2, 0);
        assert_eq!(b.admit(0, 10, 2), Verdict::Allow);
        assert_eq!(b.admit(0, 10, 2), Verdict::Allow);
        assert_eq!(b.admit(0, 10, 2), Verdict::Refuse);
        // 10 per second: one token every 100 ms.
        assert_eq!(b.admit(100, 10, 2), Verdict::Allow);
        assert_eq!(b.admit(150, 10, 2), Verdict::Refuse);
        assert_eq!(b.admit(10_000, 10, 2), Verdict::Allow);
    }
}
