//! Durable-message bookkeeping: per user, `seq`s must arrive as 1, 2, 3, … with no gap and no
//! repeat (SPEC §6). A session keeps the highest in-order `seq` it has seen (its resume cursor);
//! at the end of a run, what each user was sent (publishes the gateway accepted) is compared with
//! what arrived.

use serde::{Deserialize, Serialize};

/// What one received `seq` means given the highest in-order `seq` before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqEvent {
    /// The next one.
    InOrder,
    /// Seen already (at or below the cursor).
    Duplicate,
    /// Ahead of the next one: `missing` `seq`s were skipped. The cursor moves to it, so that the
    /// skipped ones count once and later messages are checked against the new position.
    Gap { missing: u64 },
}

/// Classifies `seq` against the cursor `last` and returns the new cursor.
pub fn observe(last: u64, seq: u64) -> (u64, SeqEvent) {
    if seq == last + 1 {
        (seq, SeqEvent::InOrder)
    } else if seq <= last {
        (last, SeqEvent::Duplicate)
    } else {
        (seq, SeqEvent::Gap { missing: seq - last - 1 })
    }
}

/// What became of the durable messages of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loss {
    /// Users the run published to (with at least one accepted message).
    pub users: u64,
    /// Accepted messages that never arrived: skipped `seq`s plus messages missing at the end.
    pub lost: u64,
    /// Users that lost at least one.
    pub users_with_loss: u64,
    /// Messages beyond what was accepted (e.g. a publish that timed out on our side but was
    /// committed): not a loss, reported for completeness.
    pub unconfirmed_delivered: u64,
    /// A few users with losses, for the report: `(session, accepted, last in-order seq, skipped)`.
    pub examples: Vec<(usize, u64, u64, u64)>,
}

/// Compares, session by session, the accepted count with the final cursor and skipped `seq`s.
/// The users are fresh (this run's ids), so the accepted messages of a user have `seq`
/// 1..=accepted.
pub fn account(accepted: &[u64], last_seq: &[u64], missing: &[u64]) -> Loss {
    let mut loss = Loss::default();
    for (i, &want) in accepted.iter().enumerate() {
        let got = last_seq.get(i).copied().unwrap_or(0);
        let skipped = missing.get(i).copied().unwrap_or(0);
        if want > 0 {
            loss.users += 1;
        }
        let short = want.saturating_sub(got) + skipped.min(want);
        loss.unconfirmed_delivered += got.saturating_sub(want);
        if short > 0 {
            loss.lost += short;
            loss.users_with_loss += 1;
            if loss.examples.len() < 10 {
                loss.examples.push((i, want, got, skipped));
            }
        }
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_seqs_are_in_order_and_repeats_and_jumps_are_caught() {
        let mut cursor = 0;
        let mut events = Vec::new();
        for seq in [1, 2, 3, 3, 2, 6, 7, 9] {
            let (next, event) = observe(cursor, seq);
            cursor = next;
            events.push(event);
        }
        use SeqEvent::*;
        assert_eq!(
            events,
            [InOrder, InOrder, InOrder, Duplicate, Duplicate, Gap { missing: 2 }, InOrder, Gap { missing: 1 }]
        );
        assert_eq!(cursor, 9);
        // A resumed session starts from its cursor, not from 0.
        assert_eq!(observe(41, 42), (42, InOrder));
    }

    #[test]
    fn accounting_finds_missing_tails_and_skipped_seqs() {
        // Session 0 got all 3; 1 stopped at 2 of 5; 2 was never sent anything; 3 skipped one seq
        // (cursor 4 of 4, but 1 skipped); 4 received one more than accepted.
        let loss = account(&[3, 5, 0, 4, 1], &[3, 2, 0, 4, 2], &[0, 0, 0, 1, 0]);
        assert_eq!(loss.users, 4);
        assert_eq!(loss.lost, 4);
        assert_eq!(loss.users_with_loss, 2);
        assert_eq!(loss.unconfirmed_delivered, 1);
        assert_eq!(loss.examples, vec![(1, 5, 2, 0), (3, 4, 4, 1)]);
        assert_eq!(account(&[2, 2], &[2, 2], &[0, 0]).lost, 0);
        // Reports shorter than the sessions count as nothing received.
        assert_eq!(account(&[2], &[], &[]).lost, 2);
    }
}
