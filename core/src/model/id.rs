//! Message ids: UUID version 7 (RFC 9562) from one clock read, cheap enough for every publish.
//!
//! Layout of the 128 bits, most significant first:
//!
//! | bits | field | content |
//! |---:|---|---|
//! | 48 | `unix_ts_ms` | milliseconds since the Unix epoch |
//! | 4 | `ver` | `0b0111` (version 7) |
//! | 12 | `rand_a` | the 12 high bits of a 16-bit per-millisecond counter |
//! | 2 | `var` | `0b10` (RFC 9562 variant) |
//! | 4 | `rand_b` | the 4 low bits of the counter |
//! | 58 | `rand_b` | random bits drawn once per process |
//!
//! Timestamp and counter live in one `AtomicU64` (`ms << 16 | counter`) advanced by compare-and-swap,
//! so every id is greater than every id made before it in this process, on any thread (RFC 9562 §6.2,
//! method 1, "fixed bit-length dedicated counter"). A new millisecond restarts the counter at zero; a
//! counter that runs out within one millisecond (more than 65,536 ids) carries into the timestamp,
//! which then runs ahead of the clock until the clock catches up, as the RFC allows; a clock that steps
//! back is ignored the same way. Ids of two processes made in the same millisecond with the same
//! counter differ in their 58 per-process random bits (a collision chance of 2^-58 per pair of
//! processes). Drawing those bits once instead of per id is what makes an id cost a clock read and one
//! uncontended atomic operation (`uuid::Uuid::now_v7` took about 300 instructions per id).

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

const COUNTER_BITS: u32 = 16;
const RANDOM_BITS: u32 = 58;

/// `unix_ts_ms << 16 | counter` of the last id made in this process.
static LAST: AtomicU64 = AtomicU64::new(0);

fn process_random() -> u64 {
    static RANDOM: OnceLock<u64> = OnceLock::new();
    *RANDOM.get_or_init(|| Uuid::new_v4().as_u64_pair().1 & ((1 << RANDOM_BITS) - 1))
}

/// The current time, read once, and an id stamped with it.
pub(crate) fn stamp() -> (Uuid, DateTime<Utc>) {
    // Before the epoch means a broken clock; the ids stay ordered anyway (the timestamp only moves up).
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since_epoch.as_secs();
    let nanos = since_epoch.subsec_nanos();
    (
        next(secs * 1000 + u64::from(nanos / 1_000_000)),
        utc(secs, nanos),
    )
}

const SECS_PER_DAY: u64 = 86_400;

thread_local! {
    /// The day (since the epoch) of this thread's last stamp and its date: turning a day number
    /// into a calendar date is a third of `DateTime::from_timestamp`'s cost, and the day rarely
    /// changes between two publishes.
    static LAST_DAY: Cell<Option<(u64, NaiveDate)>> = const { Cell::new(None) };
}

/// `DateTime::from_timestamp(secs, nanos)`, with the date of the day kept per thread.
fn utc(secs: u64, nanos: u32) -> DateTime<Utc> {
    let (day, secs_of_day) = (secs / SECS_PER_DAY, (secs % SECS_PER_DAY) as u32);
    let date = LAST_DAY.with(|last| match last.get() {
        Some((cached, date)) if cached == day => Some(date),
        _ => {
            let date = DateTime::from_timestamp((day * SECS_PER_DAY) as i64, 0)
                .map(|midnight| midnight.date_naive());
            if let Some(date) = date {
                last.set(Some((day, date)));
            }
            date
        }
    });
    match (
        date,
        NaiveTime::from_num_seconds_from_midnight_opt(secs_of_day, nanos),
    ) {
        (Some(date), Some(time)) => date.and_time(time).and_utc(),
        _ => DateTime::from_timestamp(secs as i64, nanos).unwrap_or_default(),
    }
}

/// The next id at or after millisecond `now_ms`.
fn next(now_ms: u64) -> Uuid {
    let mut last = LAST.load(Relaxed);
    let state = loop {
        let next = if now_ms > last >> COUNTER_BITS {
            now_ms << COUNTER_BITS
        } else {
            last + 1
        };
        match LAST.compare_exchange_weak(last, next, Relaxed, Relaxed) {
            Ok(_) => break next,
            Err(actual) => last = actual,
        }
    };
    from_state(state, process_random())
}

fn from_state(state: u64, random: u64) -> Uuid {
    let counter = state & 0xFFFF;
    let high = (state & !0xFFFF) | 0x7000 | (counter >> 4);
    let low = (0b10 << 62) | ((counter & 0xF) << RANDOM_BITS) | random;
    Uuid::from_u64_pair(high, low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_cached_date_gives_what_chrono_gives() {
        // Across day boundaries, both ways, a leap day and a leap-second-shaped nanosecond field.
        let moments = [
            (0, 0),
            (86_399, 999_999_999),
            (86_400, 0),
            (1_709_164_799, 5), // 2024-02-28 23:59:59
            (1_709_164_800, 6), // 2024-02-29
            (1_709_251_200, 7), // 2024-03-01
            (1_709_164_800, 8), // back to 2024-02-29 after the cache moved on
            (1_796_083_199, 999_999_999),
            (4_102_444_800, 1), // 2100-01-01
        ];
        for (secs, nanos) in moments {
            assert_eq!(
                utc(secs, nanos),
                DateTime::from_timestamp(secs as i64, nanos).expect("in range"),
                "{secs}.{nanos}"
            );
        }
    }

    #[test]
    fn ids_are_rfc_9562_version_7_stamped_with_the_clock_read() {
        let (id, at) = stamp();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = id
            .get_timestamp()
            .expect("a v7 id has a timestamp")
            .to_unix();
        let id_ms = secs * 1000 + u64::from(nanos / 1_000_000);
        let at_ms = at.timestamp_millis() as u64;
        // Equal unless another test's ids ran the counter past a millisecond.
        assert!(
            id_ms >= at_ms && id_ms <= at_ms + 1000,
            "{id_ms} vs {at_ms}"
        );
    }

    #[test]
    fn the_counter_fills_rand_a_and_carries_into_the_timestamp() {
        let random = (1 << RANDOM_BITS) - 1;
        let id = from_state(5 << 16 | 0xABCD, random);
        let (high, low) = id.as_u64_pair();
        assert_eq!(high, 5 << 16 | 0x7ABC);
        assert_eq!(low, 0b10 << 62 | 0xD << 58 | random);
        assert!(from_state(5 << 16 | 0xFFFF, random) < from_state(6 << 16, 0));
    }

    #[test]
    fn ids_are_unique_and_increase_on_every_thread_under_concurrency() {
        const THREADS: usize = 8;
        const PER_THREAD: usize = 50_000;
        let per_thread: Vec<Vec<Uuid>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|_| scope.spawn(|| (0..PER_THREAD).map(|_| stamp().0).collect::<Vec<_>>()))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("id thread"))
                .collect()
        });
        let mut all = HashSet::new();
        for ids in &per_thread {
            assert!(
                ids.windows(2).all(|pair| pair[0] < pair[1]),
                "monotonic per thread"
            );
            all.extend(ids.iter().copied());
        }
        assert_eq!(all.len(), THREADS * PER_THREAD, "unique across threads");
        // Ordering across threads: an id made after another id was returned is greater than it.
        let (before, _) = stamp();
        assert!(all.iter().all(|id| *id < before));
    }
}
