//! Delayed delivery in memory (`PublishOptions::deliver_after` / `deliver_at` on
//! `Herald::publish_with`): a delayed message is accepted and counted at publish, runs no sooner
//! than its time, holds its key's place for `ordered` handlers (as the outbox does), is
//! dead-lettered with reason `shutdown` when the runtime stops first, and a publish cancelled
//! while it waits for room leaves nothing behind.

use async_trait::async_trait;
use herald::ports::{Capabilities, Confirmation, MessageSink, OutgoingMessage, SinkError};
use herald::{
    async_handler, DeadLetterReason, Event, HandlerStatus, Herald, Overload, PoolConfig,
    PublishOptions, State,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the handlers saw, with when.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, Instant)>>>);

impl Seen {
    fn push(&self, what: impl Into<String>) {
        self.0
            .lock()
            .expect("lock")
            .push((what.into(), Instant::now()));
    }
    fn names(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .map(|(name, _)| name.clone())
            .collect()
    }
    fn at(&self, what: &str) -> Option<Instant> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .find(|(name, _)| name == what)
            .map(|(_, at)| *at)
    }
    fn position(&self, what: &str) -> usize {
        self.names()
            .iter()
            .position(|name| name == what)
            .unwrap_or_else(|| panic!("`{what}` was not handled: {:?}", self.names()))
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

mod timing {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "delays.reminder")]
    pub(crate) struct Reminder {
        pub(crate) label: String,
    }

    #[async_handler]
    async fn remind(event: Reminder, State(seen): State<Seen>) {
        seen.push(event.label);
    }

    fn build(seen: &Seen) -> Herald {
        Herald::builder()
            .handlers_under(module_path!())
            .state(seen.clone())
            .build()
            .expect("valid registry")
    }

    #[tokio::test]
    async fn a_delayed_message_is_counted_at_once_and_handled_no_sooner_than_its_time() {
        let seen = Seen::default();
        let herald = build(&seen);
        let published = Instant::now();
        let after = herald
            .publish_with(
                Reminder {
                    label: "after".into(),
                },
                PublishOptions::new().deliver_after(Duration::from_millis(400)),
            )
            .await
            .expect("accepted");
        let at = herald
            .publish_with(
                Reminder { label: "at".into() },
                PublishOptions::new().deliver_at(
                    herald::chrono::Utc::now() + herald::chrono::Duration::milliseconds(300),
                ),
            )
            .await
            .expect("accepted");
        let now = herald
            .publish(Reminder {
                label: "now".into(),
            })
            .await
            .expect("accepted");
        assert!(now.await.is_success());

        // Accepted at publish: counted `queued`, and `delayed` among them.
        let counts = herald.ledger().total;
        assert_eq!(counts.accepted, 3, "{counts}");
        assert_eq!((counts.delayed, counts.queued), (2, 2), "{counts}");
        assert!(counts.is_balanced(), "{counts}");
        assert_eq!(seen.names(), ["now"], "the delayed ones wait");

        assert!(at.await.is_success());
        assert!(after.await.is_success());
        assert!(seen.at("at").expect("handled") >= published + Duration::from_millis(300));
        assert!(seen.at("after").expect("handled") >= published + Duration::from_millis(400));
        let counts = herald.ledger().total;
        assert_eq!((counts.succeeded, counts.delayed, counts.queued), (3, 0, 0));
        assert!(counts.is_balanced(), "{counts}");
    }

    #[tokio::test]
    async fn a_moment_already_past_or_a_zero_delay_is_due_at_once() {
        let seen = Seen::default();
        let herald = build(&seen);
        let past = herald
            .publish_with(
                Reminder {
                    label: "past".into(),
                },
                PublishOptions::new().deliver_at(
                    herald::chrono::Utc::now() - herald::chrono::Duration::seconds(3600),
                ),
            )
            .await
            .expect("accepted");
        let zero = herald
            .publish_with(
                Reminder {
                    label: "zero".into(),
                },
                PublishOptions::new().deliver_after(Duration::ZERO),
            )
            .await
            .expect("accepted");
        assert!(past.await.is_success() && zero.await.is_success());
        assert_eq!(herald.ledger().total.delayed, 0);
    }

    #[tokio::test]
    async fn shutdown_before_its_time_dead_letters_a_delayed_message_and_one_due_in_time_is_delivered(
    ) {
        let seen = Seen::default();
        let herald = build(&seen);
        let soon = herald
            .publish_with(
                Reminder {
                    label: "soon".into(),
                },
                PublishOptions::new().deliver_after(Duration::from_millis(150)),
            )
            .await
            .expect("accepted");
        let tomorrow = herald
            .publish_with(
                Reminder {
                    label: "tomorrow".into(),
                },
                PublishOptions::new().deliver_after(Duration::from_secs(86_400)),
            )
            .await
            .expect("accepted");

        let report = herald.shutdown(Duration::from_millis(600)).await;
        assert!(!report.drained, "tomorrow's message was still waiting");
        assert_eq!(
            (report.dead_lettered_queued, report.dead_lettered_running),
            (1, 0)
        );
        assert!(
            soon.await.is_success(),
            "due before the deadline: delivered"
        );
        let outcome = tomorrow.await;
        assert!(
            matches!(outcome.reports[0].status, HandlerStatus::Interrupted),
            "{outcome:?}"
        );
        assert_eq!(seen.names(), ["soon"]);
        let dead = herald.dead_letters().list(10).await.expect("list");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, DeadLetterReason::Shutdown);
        assert_eq!(dead[0].attempts, 0, "it never ran");
        assert_eq!(dead[0].payload["label"], "tomorrow");
        let ledger = report.ledger;
        assert_eq!(
            (
                ledger.total.accepted,
                ledger.total.succeeded,
                ledger.total.dead_lettered
            ),
            (2, 1, 1)
        );
        assert_eq!((ledger.total.delayed, ledger.total.queued), (0, 0));
        assert!(ledger.is_balanced(), "{ledger}");
    }
}

mod ordering {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "delays.account_changed", key = account)]
    pub(crate) struct AccountChanged {
        pub(crate) account: String,
        pub(crate) label: String,
    }

    #[async_handler(ordered)]
    async fn apply_in_order(event: AccountChanged, State(seen): State<Seen>) {
        seen.push(format!("ordered {}", event.label));
    }

    #[async_handler]
    async fn notify_unordered(event: AccountChanged, State(seen): State<Seen>) {
        seen.push(format!("unordered {}", event.label));
    }

    fn changed(account: &str, label: &str) -> AccountChanged {
        AccountChanged {
            account: account.into(),
            label: label.into(),
        }
    }

    /// The rule (docs/DELAYS_AND_BREAKERS.md): a delayed message keeps its key's place. An
    /// `ordered` handler runs later messages of the key after it; other keys and unordered
    /// handlers do not wait.
    #[tokio::test]
    async fn a_delayed_message_holds_back_later_messages_of_its_key_for_an_ordered_handler() {
        let seen = Seen::default();
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .state(seen.clone())
            .build()
            .expect("valid registry");
        let published = Instant::now();
        let delayed = herald
            .publish_with(
                changed("A", "a1"),
                PublishOptions::new().deliver_after(Duration::from_millis(300)),
            )
            .await
            .expect("accepted");
        let later = herald.publish(changed("A", "a2")).await.expect("accepted");
        let other = herald.publish(changed("B", "b1")).await.expect("accepted");
        assert!(other.await.is_success());
        for outcome in [delayed.await, later.await] {
            assert!(outcome.is_success(), "{outcome:?}");
        }

        assert!(seen.position("ordered b1") < seen.position("ordered a1"));
        assert!(
            seen.position("ordered a1") < seen.position("ordered a2"),
            "a2 waited for a1: {:?}",
            seen.names()
        );
        assert!(seen.at("ordered a2").expect("handled") >= published + Duration::from_millis(300));
        // Without `ordered`, a2 does not wait for its delayed predecessor.
        assert!(seen.position("unordered a2") < seen.position("unordered a1"));
        assert!(herald.ledger().is_balanced(), "{}", herald.ledger());
    }
}

mod room {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "delays.invoice_due")]
    pub(crate) struct InvoiceDue {
        pub(crate) label: String,
    }

    #[async_handler(pool = "roomy")]
    async fn book(event: InvoiceDue, State(seen): State<Seen>) {
        seen.push(format!("book {}", event.label));
    }

    #[async_handler(pool = "tight")]
    async fn remind(event: InvoiceDue, State(seen): State<Seen>) {
        seen.push(format!("remind {}", event.label));
    }

    fn build(seen: &Seen, tight: Overload) -> Herald {
        Herald::builder()
            .handlers_under(module_path!())
            .pool("roomy", PoolConfig::new().queue(10))
            .pool(
                "tight",
                PoolConfig::new().concurrency(1).queue(1).overload(tight),
            )
            .state(seen.clone())
            .build()
            .expect("valid registry")
    }

    fn invoice(label: &str) -> InvoiceDue {
        InvoiceDue {
            label: label.into(),
        }
    }

    fn depth(herald: &Herald, pool: &str) -> usize {
        herald
            .pool_stats()
            .into_iter()
            .find(|stats| stats.name == pool)
            .expect("pool")
            .depth
    }

    /// A delayed message holds a slot of each pool's queue while it waits. A second one finds
    /// the tight pool full and waits for room (`CallerRuns` too: a delayed job cannot run on the
    /// caller now); cancelled by a timeout, it gives back the slot it took in the roomy pool.
    #[tokio::test]
    async fn a_publish_cancelled_while_it_waits_for_room_leaves_nothing_half_admitted() {
        for tight in [Overload::WAIT, Overload::CallerRuns] {
            let seen = Seen::default();
            let herald = build(&seen, tight);
            let first = herald
                .publish_with(
                    invoice("first"),
                    PublishOptions::new().deliver_after(Duration::from_secs(3600)),
                )
                .await
                .expect("accepted");
            assert_eq!((depth(&herald, "roomy"), depth(&herald, "tight")), (1, 1));

            let second = tokio::time::timeout(
                Duration::from_millis(100),
                herald.publish_with(
                    invoice("second"),
                    PublishOptions::new().deliver_after(Duration::from_millis(10)),
                ),
            )
            .await;
            assert!(second.is_err(), "{tight}: the publisher waited for room");
            assert_eq!(
                (depth(&herald, "roomy"), depth(&herald, "tight")),
                (1, 1),
                "{tight}: the slot taken in `roomy` was given back"
            );
            let counts = herald.ledger().total;
            assert_eq!((counts.accepted, counts.delayed), (2, 2), "{counts}");
            assert!(counts.is_balanced(), "{counts}");

            let report = herald.shutdown(Duration::from_millis(50)).await;
            assert_eq!(report.dead_lettered_queued, 2);
            assert!(first
                .await
                .reports
                .iter()
                .all(|report| matches!(report.status, HandlerStatus::Interrupted)));
            assert!(seen.names().is_empty(), "nothing ran: {:?}", seen.names());
            assert_eq!(herald.dead_letters().list(10).await.expect("list").len(), 2);
            assert!(report.ledger.is_balanced(), "{}", report.ledger);
        }
    }

    #[tokio::test]
    async fn try_publish_with_a_delay_is_refused_by_a_full_pool_with_the_message_back() {
        let seen = Seen::default();
        let herald = build(&seen, Overload::Reject);
        let first = herald
            .try_publish_with(
                invoice("first"),
                PublishOptions::new().deliver_after(Duration::from_millis(200)),
            )
            .expect("room");
        let refused = herald
            .try_publish_with(
                invoice("second"),
                PublishOptions::new().deliver_after(Duration::from_millis(200)),
            )
            .expect_err("the tight pool is full");
        assert_eq!(refused.into_message().label, "second");
        assert!(first.await.is_success());
        let ledger = herald.ledger();
        assert_eq!((ledger.total.accepted, ledger.total.rejected), (2, 2));
        assert!(ledger.is_balanced(), "{ledger}");
    }
}

mod route {
    use super::*;

    /// A sink that confirms everything and records when.
    #[derive(Debug, Default)]
    struct Recording {
        published: Mutex<Vec<(String, Instant)>>,
    }

    #[async_trait]
    impl MessageSink for Recording {
        async fn publish(
            &self,
            batch: Vec<OutgoingMessage>,
        ) -> Result<Vec<Confirmation>, SinkError> {
            let mut published = self.published.lock().expect("lock");
            Ok(batch
                .into_iter()
                .map(|message| {
                    published.push((message.payload, Instant::now()));
                    Confirmation::Confirmed
                })
                .collect())
        }

        fn capabilities(&self) -> Capabilities {
            Capabilities::none()
        }

        fn destination(&self) -> String {
            "recording".to_owned()
        }
    }

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "delays.trial_ends")]
    pub(crate) struct TrialEnds {
        pub(crate) user: u32,
    }

    #[tokio::test]
    async fn a_route_forwards_a_delayed_message_when_its_time_comes() {
        let sink = Arc::new(Recording::default());
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .route::<TrialEnds>()
            .to(sink.clone())
            .build()
            .expect("valid registry");
        let published = Instant::now();
        let delivery = herald
            .publish_with(
                TrialEnds { user: 7 },
                PublishOptions::new().deliver_after(Duration::from_millis(250)),
            )
            .await
            .expect("accepted");
        assert!(sink.published.lock().expect("lock").is_empty());
        assert!(delivery.await.is_success());
        let published_at = sink.published.lock().expect("lock").clone();
        assert_eq!(published_at.len(), 1);
        assert_eq!(published_at[0].0, r#"{"user":7}"#);
        assert!(published_at[0].1 >= published + Duration::from_millis(250));
        eventually("a balanced ledger", || herald.ledger().is_balanced()).await;
    }
}

#[test]
fn delivery_times_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<herald::DeliverAt>();
    assert_send_sync::<PublishOptions>();
}
