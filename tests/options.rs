//! Handler options: retry, permanent errors, timeout, on_failure, rate, dedupe, ordered; dead-letter
//! inspection, re-drive and purge.

use herald::{
    async_handler, DeadLetterReason, Event, HandlerError, HandlerErrorKind, HandlerStatus, Herald,
    Meta, PublishOptions, State,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<(String, u32)>>>);

impl Calls {
    fn push(&self, what: impl Into<String>, attempt: u32) {
        self.0.lock().expect("lock").push((what.into(), attempt));
    }
    fn all(&self) -> Vec<(String, u32)> {
        self.0.lock().expect("lock").clone()
    }
}

fn herald_for(module: &str, calls: &Calls) -> Herald {
    Herald::builder()
        .handlers_under(module)
        .state(calls.clone())
        .build()
        .expect("valid registry")
}

mod retry {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "options.flaky")]
    pub(crate) struct Flaky {
        pub(crate) fail_times: u32,
        pub(crate) permanent: bool,
    }

    #[async_handler(retry(max_attempts = 5, backoff = exponential(1ms, 2.0, 4ms)))]
    async fn flaky(
        event: Flaky,
        meta: Meta,
        State(calls): State<Calls>,
    ) -> Result<(), HandlerError> {
        calls.push("flaky", meta.attempt());
        if event.permanent {
            return Err(HandlerError::permanent(HandlerError::msg(
                "invalid phone number",
            )));
        }
        if meta.attempt() <= event.fail_times {
            return Err(HandlerError::msg("partner timeout"));
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_failing_handler_is_retried_until_it_succeeds() {
        let calls = Calls::default();
        let herald = herald_for(module_path!(), &calls);
        let outcome = herald
            .publish(Flaky {
                fail_times: 2,
                permanent: false,
            })
            .await
            .expect("accepted")
            .await;
        assert!(
            matches!(
                outcome.reports[0].status,
                HandlerStatus::Succeeded { attempts: 3 }
            ),
            "{outcome:?}"
        );
        assert_eq!(
            calls.all().iter().map(|c| c.1).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let ledger = herald.ledger();
        assert_eq!(
            (
                ledger.total.failed_attempts,
                ledger.total.retried,
                ledger.total.succeeded
            ),
            (2, 2, 1)
        );
    }

    #[tokio::test]
    async fn retries_are_bounded_then_the_message_is_dead_lettered_with_its_history() {
        let calls = Calls::default();
        let herald = herald_for(module_path!(), &calls);
        let outcome = herald
            .publish(Flaky {
                fail_times: 99,
                permanent: false,
            })
            .await
            .expect("accepted")
            .await;
        let failure = outcome.failures().next().expect("failed");
        assert_eq!(failure.attempts, 5);
        let dead = herald.dead_letters().list(10).await.expect("list");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 5);
        assert_eq!(dead[0].reason, DeadLetterReason::Failed);
        assert_eq!(dead[0].first_error.as_deref(), Some("partner timeout"));
        assert!(dead[0].first_failed_at <= dead[0].last_failed_at);
    }

    #[tokio::test]
    async fn a_permanent_error_is_not_retried() {
        let calls = Calls::default();
        let herald = herald_for(module_path!(), &calls);
        let outcome = herald
            .publish(Flaky {
                fail_times: 0,
                permanent: true,
            })
            .await
            .expect("accepted")
            .await;
        let failure = outcome.failures().next().expect("failed");
        assert_eq!(failure.attempts, 1);
        assert!(failure.error.is_permanent());
        assert_eq!(calls.all().len(), 1);
    }

    #[tokio::test]
    async fn a_dead_letter_can_be_inspected_redriven_and_purged() {
        let calls = Calls::default();
        let herald = herald_for(module_path!(), &calls);
        let first = herald
            .publish(Flaky {
                fail_times: 5,
                permanent: false,
            })
            .await
            .expect("accepted");
        let id = first.message_id();
        assert!(!first.await.is_success());
        let store = herald.dead_letters();
        let entry = store
            .list(10)
            .await
            .expect("list")
            .pop()
            .expect("one entry");
        assert_eq!(
            store
                .get(entry.id)
                .await
                .expect("get")
                .map(|e| e.envelope.id),
            Some(id)
        );
        // Re-driven with a fresh attempt count: attempts 1..5 again, and attempt 6 > fail_times is never reached,
        // so it fails again; the entry comes back with 5 more attempts.
        let redriven = herald.redrive(entry.id).await.expect("redriven").await;
        assert_eq!(redriven.message_id, id, "the original envelope is kept");
        assert_eq!(
            calls.all().iter().filter(|c| c.1 == 1).count(),
            2,
            "attempt count restarted at 1"
        );
        let entries = store.list(10).await.expect("list");
        assert_eq!(entries.len(), 1);
        assert_eq!(store.purge(Some(entries[0].id)).await.expect("purge"), 1);
        assert_eq!(store.count().await.expect("count"), 0);
        let missing = herald.redrive(entries[0].id).await.expect_err("purged");
        assert!(matches!(missing, herald::StoredError::NotFound(_)));
    }
}

mod timeout_and_disposition {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "options.slow")]
    pub(crate) struct Slow {
        pub(crate) millis: u64,
    }

    #[async_handler(timeout = "20ms", retry(max_attempts = 2, backoff = fixed(1ms)))]
    async fn slow(event: Slow, State(calls): State<Calls>, meta: Meta) {
        calls.push("slow-start", meta.attempt());
        tokio::time::sleep(Duration::from_millis(event.millis)).await;
        calls.push("slow-end", meta.attempt());
    }

    #[async_handler(retry(max_attempts = 1), on_failure = ignore)]
    async fn best_effort(_event: Slow) -> Result<(), HandlerError> {
        Err(HandlerError::msg("analytics down"))
    }

    #[async_handler(retry(max_attempts = 1), on_failure = log)]
    async fn logged(_event: Slow) -> Result<(), HandlerError> {
        Err(HandlerError::msg("crm down"))
    }

    #[tokio::test]
    async fn a_handler_past_its_timeout_is_cancelled_and_the_attempt_fails() {
        let calls = Calls::default();
        let herald = herald_for(module_path!(), &calls);
        let outcome = herald
            .publish(Slow { millis: 1_000 })
            .await
            .expect("accepted")
            .await;
        let slow = outcome
            .failures()
            .find(|f| f.handler.ends_with("::slow"))
            .expect("slow failed");
        assert_eq!(slow.error.kind(), HandlerErrorKind::TimedOut);
        assert_eq!(slow.attempts, 2);
        assert!(
            calls.all().iter().all(|c| c.0 == "slow-start"),
            "cancelled before the end: {:?}",
            calls.all()
        );
    }

    #[tokio::test]
    async fn log_and_ignore_end_the_message_without_a_dead_letter() {
        let calls = Calls::default();
        let herald = herald_for(module_path!(), &calls);
        let outcome = herald
            .publish(Slow { millis: 0 })
            .await
            .expect("accepted")
            .await;
        let mut dispositions: Vec<_> = outcome
            .failures()
            .map(|f| (f.handler, f.disposition))
            .collect();
        dispositions.sort_by_key(|d| d.0);
        assert_eq!(dispositions.len(), 2);
        assert_eq!(dispositions[0].1, herald::Disposition::Ignored);
        assert_eq!(dispositions[1].1, herald::Disposition::Logged);
        assert_eq!(herald.dead_letters().count().await.expect("count"), 0);
        let ledger = herald.ledger();
        assert_eq!(
            (
                ledger.total.ignored,
                ledger.total.succeeded,
                ledger.total.dead_lettered
            ),
            (2, 1, 0)
        );
        assert!(ledger.is_balanced(), "{ledger}");
    }
}

mod rate {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "options.sms")]
    pub(crate) struct Sms {
        pub(crate) n: u32,
    }

    #[async_handler(rate = "50/s")]
    async fn send_sms(event: Sms, State(calls): State<Calls>) {
        calls.push("sms", event.n);
    }

    #[tokio::test]
    async fn the_rate_limit_spaces_attempts_evenly() {
        let calls = Calls::default();
        let herald = herald_for(module_path!(), &calls);
        let started = Instant::now();
        let mut deliveries = Vec::new();
        for n in 0..11 {
            deliveries.push(herald.publish(Sms { n }).await.expect("accepted"));
        }
        for delivery in deliveries {
            assert!(delivery.await.is_success());
        }
        // 11 attempts at 50/s with no burst: 10 gaps of 20 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(calls.all().len(), 11);
    }
}

mod dedupe {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "options.coupon")]
    pub(crate) struct CouponIssued {
        pub(crate) user: String,
    }

    #[async_handler(dedupe)]
    async fn send_coupon(event: CouponIssued, State(calls): State<Calls>) {
        calls.push(event.user, 0);
    }

    #[tokio::test]
    async fn a_resend_with_the_same_id_has_no_second_effect() {
        let calls = Calls::default();
        let herald = herald_for(module_path!(), &calls);
        for _ in 0..3 {
            let options = PublishOptions::new().idempotency_key("coupon-42");
            let outcome = herald
                .publish_with(CouponIssued { user: "kim".into() }, options)
                .await
                .expect("accepted")
                .await;
            assert!(outcome.is_success());
        }
        let other = herald
            .publish_with(
                CouponIssued { user: "lee".into() },
                PublishOptions::new().idempotency_key("coupon-43"),
            )
            .await
            .expect("accepted")
            .await;
        assert!(other.is_success());
        assert_eq!(calls.all().len(), 2);
        let ledger = herald.ledger();
        assert_eq!((ledger.total.succeeded, ledger.total.deduplicated), (2, 2));
        assert!(ledger.is_balanced());
    }
}

mod ordered {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "options.account_changed", key = account)]
    pub(crate) struct AccountChanged {
        pub(crate) account: u32,
        pub(crate) seq: u32,
    }

    #[derive(Clone, Default)]
    pub(crate) struct Running(Arc<AtomicU32>, Arc<AtomicU32>);

    #[async_handler(ordered, retry(max_attempts = 3, backoff = fixed(5ms)))]
    async fn apply(
        event: AccountChanged,
        meta: Meta,
        State(calls): State<Calls>,
        State(running): State<Running>,
    ) -> Result<(), HandlerError> {
        let now = running.0.fetch_add(1, Ordering::SeqCst) + 1;
        running.1.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        running.0.fetch_sub(1, Ordering::SeqCst);
        // The first change of each account fails once: its key must stay held across the retry.
        if event.seq == 0 && meta.attempt() == 1 {
            return Err(HandlerError::msg("conflict, retry"));
        }
        calls.push(format!("{}", event.account), event.seq);
        Ok(())
    }

    #[tokio::test]
    async fn the_same_key_runs_in_publish_order_across_retries_and_keys_run_in_parallel() {
        let (calls, running) = (Calls::default(), Running::default());
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .state(calls.clone())
            .state(running.clone())
            .build()
            .expect("valid registry");
        let mut deliveries = Vec::new();
        for seq in 0..20 {
            for account in 0..4 {
                deliveries.push(
                    herald
                        .publish(AccountChanged { account, seq })
                        .await
                        .expect("accepted"),
                );
            }
        }
        for delivery in deliveries {
            assert!(delivery.await.is_success());
        }
        let all = calls.all();
        assert_eq!(all.len(), 80);
        for account in 0..4 {
            let seqs: Vec<u32> = all
                .iter()
                .filter(|c| c.0 == account.to_string())
                .map(|c| c.1)
                .collect();
            assert_eq!(
                seqs,
                (0..20).collect::<Vec<_>>(),
                "account {account} out of order"
            );
        }
        let peak = running.1.load(Ordering::SeqCst);
        assert!(
            peak > 1 && peak <= 4,
            "different keys in parallel, one per key at most: peak {peak}"
        );
        assert!(herald.ledger().is_balanced());
    }
}
