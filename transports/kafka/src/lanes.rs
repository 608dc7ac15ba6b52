//! The messages read from Kafka and not finished, and the leases over them: Kafka has no
//! per-message ack, so leases, retries and per-key order live here, in the consumer's process.
//!
//! One key is one lane: the earliest unfinished message of a key holds it (while leased, waiting
//! for its retry, or given back), and a later message of that key is handed out only once the
//! holder finished. Messages without a key run concurrently.

use herald_core::ports::{Receipt, Received, Settlement, StoredMessage};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Where a message sits in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Position {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// One message read and not finished.
#[derive(Debug, Clone)]
struct Unit {
    /// Arrival order (Kafka's order within a partition).
    seq: u64,
    position: Position,
    message: StoredMessage,
}

#[derive(Debug)]
struct Leased {
    unit: Unit,
    owner: String,
    until: Instant,
}

/// What a settlement did to a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Finished (done or failed for good): its offset may be committed.
    Finished(Position),
    /// Still held (a retry waits for its time, or it was given back).
    Held,
    /// The owner did not hold it (its lease ran out, or its partition was revoked).
    NotHeld,
}

/// Every message read and not finished.
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    /// Ready to hand out, in arrival order.
    waiting: VecDeque<Unit>,
    /// Retries waiting for their time.
    delayed: Vec<(Instant, Unit)>,
    /// Handed out, by receipt.
    leased: HashMap<u64, Leased>,
    /// Which message (by `seq`) holds each key.
    holders: HashMap<String, u64>,
    next_seq: u64,
    next_receipt: u64,
}

impl Lanes {
    /// A message read from Kafka.
    pub(crate) fn push(&mut self, position: Position, message: StoredMessage) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiting.push_back(Unit {
            seq,
            position,
            message,
        });
    }

    /// How many messages are held (waiting, delayed or leased).
    pub(crate) fn len(&self) -> usize {
        self.waiting.len() + self.delayed.len() + self.leased.len()
    }

    /// When the next retry is due, if any waits.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.delayed.iter().map(|(due, _)| *due).min()
    }

    /// Leases up to `limit` messages to `owner`: expired leases and due retries first come back
    /// into line, then the earliest messages whose key is free (or held by themselves).
    pub(crate) fn take(
        &mut self,
        owner: &str,
        limit: usize,
        lease: Duration,
        now: Instant,
    ) -> Vec<Received> {
        self.reclaim(now);
        let mut taken = Vec::new();
        let mut index = 0;
        while index < self.waiting.len() && taken.len() < limit {
            let unit = &self.waiting[index];
            let free = match &unit.message.key {
                None => true,
                Some(key) => match self.holders.get(key) {
                    None => {
                        self.holders.insert(key.clone(), unit.seq);
                        true
                    }
                    Some(holder) => *holder == unit.seq,
                },
            };
            if !free {
                index += 1;
                continue;
            }
            let Some(unit) = self.waiting.remove(index) else {
                break;
            };
            let receipt = self.next_receipt;
            self.next_receipt += 1;
            taken.push(Received {
                receipt: Receipt(receipt),
                message: unit.message.clone(),
            });
            self.leased.insert(
                receipt,
                Leased {
                    unit,
                    owner: owner.to_owned(),
                    until: now + lease,
                },
            );
        }
        taken
    }

    /// Extends `owner`'s leases on `receipts`; returns the ones it still held.
    pub(crate) fn keep(
        &mut self,
        owner: &str,
        receipts: &[Receipt],
        lease: Duration,
        now: Instant,
    ) -> Vec<Receipt> {
        self.reclaim(now);
        receipts
            .iter()
            .filter(|receipt| match self.leased.get_mut(&receipt.0) {
                Some(leased) if leased.owner == owner => {
                    leased.until = now + lease;
                    true
                }
                _ => false,
            })
            .copied()
            .collect()
    }

    /// Applies what the engine decided for one message `owner` held.
    pub(crate) fn settle(
        &mut self,
        owner: &str,
        receipt: Receipt,
        settlement: Settlement,
        now: Instant,
    ) -> Settled {
        match self.leased.get(&receipt.0) {
            Some(leased) if leased.owner == owner => {}
            _ => return Settled::NotHeld,
        }
        let Some(Leased { mut unit, .. }) = self.leased.remove(&receipt.0) else {
            return Settled::NotHeld;
        };
        match settlement {
            Settlement::Done { .. } | Settlement::FailedForGood { .. } => {
                self.release_key(&unit);
                Settled::Finished(unit.position)
            }
            Settlement::Retry {
                progress,
                delay,
                replacement_id,
                ..
            } => {
                unit.message.progress = progress;
                unit.message.attempt = unit.message.attempt.saturating_add(1);
                if let Some(id) = replacement_id {
                    unit.message.message_id = id.to_string();
                }
                self.delayed.push((now + delay, unit));
                Settled::Held
            }
            // Release, and any settlement a newer Herald adds: back into line at once.
            _ => {
                self.line_up(unit);
                Settled::Held
            }
        }
    }

    /// Forgets every message of `partitions` (revoked in a rebalance: another consumer reads them
    /// again from the committed offset). Leases on them are lost.
    pub(crate) fn revoke(&mut self, partitions: &[i32]) {
        let revoked = |unit: &Unit| partitions.contains(&unit.position.partition);
        let mut dropped = Vec::new();
        self.waiting.retain(|unit| {
            let keep = !revoked(unit);
            if !keep {
                dropped.push((unit.seq, unit.message.key.clone()));
            }
            keep
        });
        self.delayed.retain(|(_, unit)| {
            let keep = !revoked(unit);
            if !keep {
                dropped.push((unit.seq, unit.message.key.clone()));
            }
            keep
        });
        self.leased.retain(|_, leased| {
            let keep = !revoked(&leased.unit);
            if !keep {
                dropped.push((leased.unit.seq, leased.unit.message.key.clone()));
            }
            keep
        });
        for (seq, key) in dropped {
            if let Some(key) = key {
                if self.holders.get(&key) == Some(&seq) {
                    self.holders.remove(&key);
                }
            }
        }
    }

    /// Expired leases and due retries go back into line (keeping their keys).
    fn reclaim(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .leased
            .iter()
            .filter(|(_, leased)| leased.until <= now)
            .map(|(receipt, _)| *receipt)
            .collect();
        for receipt in expired {
            if let Some(leased) = self.leased.remove(&receipt) {
                self.line_up(leased.unit);
            }
        }
        let mut index = 0;
        while index < self.delayed.len() {
            if self.delayed[index].0 <= now {
                let (_, unit) = self.delayed.swap_remove(index);
                self.line_up(unit);
            } else {
                index += 1;
            }
        }
    }

    /// Puts a message back into the waiting line at its arrival place.
    fn line_up(&mut self, unit: Unit) {
        let at = self.waiting.partition_point(|other| other.seq < unit.seq);
        self.waiting.insert(at, unit);
    }

    fn release_key(&mut self, unit: &Unit) {
        if let Some(key) = &unit.message.key {
            if self.holders.get(key) == Some(&unit.seq) {
                self.holders.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::Progress;

    fn message(key: Option<&str>, n: u32) -> StoredMessage {
        StoredMessage {
            message_id: format!("m{n}"),
            name: "test".to_owned(),
            key: key.map(str::to_owned),
            payload: n.to_string(),
            headers: "{}".to_owned(),
            occurred_at: chrono::Utc::now(),
            attempt: 1,
            progress: Progress::new(),
            only_handlers: None,
        }
    }

    fn at(offset: i64) -> Position {
        Position {
            partition: 0,
            offset,
        }
    }

    const LEASE: Duration = Duration::from_secs(30);

    fn ids(received: &[Received]) -> Vec<&str> {
        received
            .iter()
            .map(|r| r.message.message_id.as_str())
            .collect()
    }

    fn done() -> Settlement {
        Settlement::Done {
            progress: Progress::new(),
        }
    }

    #[test]
    fn one_key_is_handed_out_one_message_at_a_time_in_order() {
        let mut lanes = Lanes::default();
        let now = Instant::now();
        lanes.push(at(0), message(Some("a"), 0));
        lanes.push(at(1), message(Some("a"), 1));
        lanes.push(at(2), message(Some("b"), 2));
        lanes.push(at(3), message(None, 3));
        let first = lanes.take("r", 10, LEASE, now);
        assert_eq!(ids(&first), ["m0", "m2", "m3"]);
        assert!(
            lanes.take("r", 10, LEASE, now).is_empty(),
            "m1 waits for m0"
        );
        assert_eq!(
            lanes.settle("r", first[0].receipt, done(), now),
            Settled::Finished(at(0))
        );
        assert_eq!(ids(&lanes.take("r", 10, LEASE, now)), ["m1"]);
    }

    #[test]
    fn a_retry_keeps_its_key_and_comes_back_after_its_delay() {
        let mut lanes = Lanes::default();
        let now = Instant::now();
        lanes.push(at(0), message(Some("a"), 0));
        lanes.push(at(1), message(Some("a"), 1));
        let first = lanes.take("r", 10, LEASE, now);
        let retry = Settlement::Retry {
            progress: Progress::new(),
            delay: Duration::from_millis(100),
            error: "boom".to_owned(),
            replacement_id: None,
        };
        assert_eq!(
            lanes.settle("r", first[0].receipt, retry, now),
            Settled::Held
        );
        assert!(lanes.take("r", 10, LEASE, now).is_empty(), "too early");
        let later = now + Duration::from_millis(100);
        let again = lanes.take("r", 10, LEASE, later);
        assert_eq!(ids(&again), ["m0"], "the retry, before m1");
        assert_eq!(again[0].message.attempt, 2);
    }

    #[test]
    fn an_expired_lease_goes_back_and_its_settlement_is_ignored() {
        let mut lanes = Lanes::default();
        let now = Instant::now();
        lanes.push(at(0), message(Some("a"), 0));
        let first = lanes.take("r1", 10, Duration::from_millis(10), now);
        let later = now + Duration::from_millis(20);
        assert!(lanes
            .keep("r1", &[first[0].receipt], LEASE, later)
            .is_empty());
        let second = lanes.take("r2", 10, LEASE, later);
        assert_eq!(ids(&second), ["m0"]);
        assert_eq!(
            lanes.settle("r1", first[0].receipt, done(), later),
            Settled::NotHeld
        );
        assert_eq!(
            lanes.settle("r2", second[0].receipt, done(), later),
            Settled::Finished(at(0))
        );
        assert_eq!(lanes.len(), 0);
    }

    #[test]
    fn a_revoked_partition_is_forgotten_with_its_keys() {
        let mut lanes = Lanes::default();
        let now = Instant::now();
        lanes.push(at(0), message(Some("a"), 0));
        lanes.push(
            Position {
                partition: 1,
                offset: 0,
            },
            message(Some("b"), 1),
        );
        let taken = lanes.take("r", 10, LEASE, now);
        lanes.revoke(&[0]);
        assert_eq!(lanes.len(), 1);
        assert_eq!(
            lanes.settle("r", taken[0].receipt, done(), now),
            Settled::NotHeld
        );
        lanes.push(at(0), message(Some("a"), 2));
        assert_eq!(ids(&lanes.take("r", 10, LEASE, now)), ["m2"], "key a free");
    }
}
