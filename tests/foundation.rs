//! Behaviour of the foundation: fan-out, command replies, extractors, start-up validation, error and
//! panic capture, `Send + Sync`.

use herald::{
    async_handler, Bus, Command, Event, HandlerErrorKind, HandlerStatus, Herald, Meta, State,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn push(&self, line: impl Into<String>) {
        self.0.lock().expect("journal lock").push(line.into());
    }
    fn lines(&self) -> Vec<String> {
        let mut lines = self.0.lock().expect("journal lock").clone();
        lines.sort();
        lines
    }
}

mod fan_out {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "test.user_signed_up")]
    pub(crate) struct UserSignedUp {
        pub(crate) email: String,
    }

    #[async_handler]
    async fn send_verification(event: UserSignedUp, State(journal): State<Journal>) {
        journal.push(format!("mail {}", event.email));
    }

    #[async_handler]
    async fn audit(event: UserSignedUp, State(journal): State<Journal>, meta: Meta) {
        journal.push(format!("audit {} attempt {}", event.email, meta.attempt()));
    }

    #[tokio::test]
    async fn an_event_reaches_every_handler_and_the_handle_reports_each() {
        let journal = Journal::default();
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .state(journal.clone())
            .build()
            .expect("valid registry");
        let outcome = herald
            .publish(UserSignedUp {
                email: "a@example.com".into(),
            })
            .await
            .expect("accepted")
            .await;
        assert!(outcome.is_success(), "{outcome:?}");
        assert_eq!(outcome.reports.len(), 2);
        assert_eq!(
            journal.lines(),
            vec!["audit a@example.com attempt 1", "mail a@example.com"]
        );
        let ledger = herald.ledger();
        assert_eq!(ledger.total.accepted, 2);
        assert_eq!(ledger.total.succeeded, 2);
        assert!(ledger.is_balanced(), "{ledger}");
    }

    #[tokio::test]
    async fn the_routing_table_lists_handlers_with_pool_and_options() {
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .state(Journal::default())
            .build()
            .expect("valid registry");
        let table = herald.routes().to_string();
        assert!(table.contains("test.user_signed_up (event)"), "{table}");
        assert!(table.contains("fan_out::audit [pool=default]"), "{table}");
        assert!(
            table.contains("fan_out::send_verification [pool=default]"),
            "{table}"
        );
        assert!(table.contains("on_failure=dead_letter"), "{table}");
    }

    #[tokio::test]
    async fn the_handler_stays_callable_as_written() {
        let journal = Journal::default();
        send_verification(
            UserSignedUp {
                email: "direct@example.com".into(),
            },
            State(journal.clone()),
        )
        .await;
        assert_eq!(journal.lines(), vec!["mail direct@example.com"]);
    }
}

mod command_reply {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct PointsGranted {
        pub(crate) total: u32,
    }

    #[derive(Command, Clone, Debug, Serialize, Deserialize)]
    #[command(name = "test.grant_points", reply = PointsGranted)]
    pub(crate) struct GrantPoints {
        pub(crate) user: String,
        pub(crate) points: u32,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("user is blocked")]
    pub(crate) struct Blocked;

    #[async_handler]
    async fn grant_points(
        command: GrantPoints,
        State(balance): State<Arc<AtomicU32>>,
    ) -> Result<PointsGranted, Blocked> {
        if command.user == "blocked" {
            return Err(Blocked);
        }
        let total = balance.fetch_add(command.points, Ordering::SeqCst) + command.points;
        Ok(PointsGranted { total })
    }

    fn herald() -> Herald {
        Herald::builder()
            .handlers_under(module_path!())
            .state(Arc::new(AtomicU32::new(0)))
            .build()
            .expect("valid registry")
    }

    #[tokio::test]
    async fn a_command_returns_its_reply() {
        let herald = herald();
        let first = herald
            .send(GrantPoints {
                user: "kim".into(),
                points: 10,
            })
            .await
            .expect("accepted");
        assert_eq!(first.await.expect("reply"), PointsGranted { total: 10 });
        let second = herald
            .send(GrantPoints {
                user: "kim".into(),
                points: 5,
            })
            .await
            .expect("accepted");
        assert_eq!(second.await.expect("reply"), PointsGranted { total: 15 });
    }

    #[tokio::test]
    async fn a_failed_command_reports_its_error_to_the_caller() {
        let herald = herald();
        let reply = herald
            .send(GrantPoints {
                user: "blocked".into(),
                points: 1,
            })
            .await
            .expect("accepted");
        let error = reply.await.expect_err("handler fails");
        let herald::CommandError::Failed(failure) = error else {
            panic!("unexpected {error:?}")
        };
        assert_eq!(failure.error.message(), "user is blocked");
        assert_eq!(
            failure.attempts, 3,
            "the default retry policy makes 3 attempts"
        );
    }
}

mod bus_follow_up {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "test.order_placed")]
    pub(crate) struct OrderPlaced {
        pub(crate) order: u64,
    }

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "test.receipt_sent")]
    pub(crate) struct ReceiptSent {
        pub(crate) order: u64,
    }

    #[derive(Clone, Default)]
    pub(crate) struct Seen(Arc<Mutex<Vec<herald::Envelope>>>);

    #[async_handler]
    async fn send_receipt(event: OrderPlaced, bus: Bus) {
        let delivery = bus
            .publish(ReceiptSent { order: event.order })
            .await
            .expect("accepted");
        drop(delivery);
    }

    #[async_handler]
    async fn record_receipt(_event: ReceiptSent, meta: Meta, State(seen): State<Seen>) {
        seen.0.lock().expect("lock").push(meta.envelope().clone());
    }

    #[tokio::test]
    async fn a_follow_up_keeps_the_correlation_id_and_names_its_cause() {
        let seen = Seen::default();
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .state(seen.clone())
            .build()
            .expect("valid registry");
        let delivery = herald
            .publish(OrderPlaced { order: 7 })
            .await
            .expect("accepted");
        let root = delivery.message_id();
        assert!(delivery.await.is_success());
        herald.shutdown(std::time::Duration::from_secs(5)).await;
        let seen = seen.0.lock().expect("lock").clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].correlation_id(), root);
        assert_eq!(seen[0].headers.causation_id, Some(root));
        assert_ne!(seen[0].id, root);
    }
}

mod failures {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "test.order_canceled")]
    pub(crate) struct OrderCanceled {
        pub(crate) order: u64,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("refund service unavailable")]
    pub(crate) struct Unavailable;

    #[async_handler(retry(max_attempts = 2, backoff = fixed(1ms)))]
    async fn refund(_event: OrderCanceled) -> Result<(), Unavailable> {
        Err(Unavailable)
    }

    #[async_handler(retry(max_attempts = 1))]
    async fn notify(event: OrderCanceled) {
        if event.order == 13 {
            panic!("unlucky order {}", event.order);
        }
    }

    #[async_handler]
    async fn archive(_event: OrderCanceled, State(journal): State<Journal>) {
        journal.push("archived");
    }

    #[tokio::test]
    async fn errors_and_panics_are_captured_counted_and_dead_lettered_while_other_handlers_run() {
        let journal = Journal::default();
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .state(journal.clone())
            .build()
            .expect("valid registry");
        let outcome = herald
            .publish(OrderCanceled { order: 13 })
            .await
            .expect("accepted")
            .await;
        assert!(!outcome.is_success());
        assert_eq!(
            journal.lines(),
            vec!["archived"],
            "the healthy handler still ran"
        );
        let mut failures: Vec<_> = outcome.failures().cloned().collect();
        failures.sort_by_key(|f| f.handler);
        assert_eq!(failures.len(), 2);
        assert!(failures[0].handler.ends_with("failures::notify"));
        assert_eq!(failures[0].error.kind(), HandlerErrorKind::Panicked);
        assert_eq!(failures[0].error.message(), "unlucky order 13");
        assert_eq!(failures[0].attempts, 1);
        assert!(failures[1].handler.ends_with("failures::refund"));
        assert_eq!(failures[1].error.kind(), HandlerErrorKind::Failed);
        assert_eq!(failures[1].attempts, 2);

        let dead = herald.dead_letters().list(10).await.expect("list");
        assert_eq!(dead.len(), 2);
        assert!(dead
            .iter()
            .any(|d| d.last_error.as_deref() == Some("panicked: unlucky order 13")));
        assert!(dead.iter().all(|d| d.envelope.id == outcome.message_id));

        let ledger = herald.ledger();
        assert_eq!(ledger.total.accepted, 3);
        assert_eq!(ledger.total.succeeded, 1);
        assert_eq!(ledger.total.dead_lettered, 2);
        assert_eq!(ledger.total.failed_attempts, 3);
        assert!(ledger.is_balanced(), "{ledger}");

        // The runtime keeps working after a panic.
        let outcome = herald
            .publish(OrderCanceled { order: 1 })
            .await
            .expect("accepted")
            .await;
        assert_eq!(
            outcome
                .reports
                .iter()
                .filter(|r| matches!(r.status, HandlerStatus::Succeeded { .. }))
                .count(),
            2
        );
    }
}

mod validation {
    use super::*;

    #[derive(Command, Clone, Debug, Serialize, Deserialize)]
    #[command(name = "test.block_login")]
    pub(crate) struct BlockLogin {
        pub(crate) user: String,
    }

    #[derive(Command, Clone, Debug, Serialize, Deserialize)]
    #[command(name = "test.unlock_login")]
    pub(crate) struct UnlockLogin {
        pub(crate) user: String,
    }

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "test.login_failed")]
    pub(crate) struct LoginFailed {
        pub(crate) user: String,
    }

    #[derive(Clone)]
    pub(crate) struct Sms;

    #[async_handler]
    async fn block_first(_command: BlockLogin) {}

    #[async_handler]
    async fn block_second(_command: BlockLogin) {}

    #[async_handler(name = "login.alert")]
    async fn alert_by_mail(_event: LoginFailed) {}

    #[async_handler(name = "login.alert", pool = "sms")]
    async fn alert_by_sms(_event: LoginFailed, State(_sms): State<Sms>) {}

    #[tokio::test]
    async fn build_reports_every_problem_at_once_with_name_and_location() {
        let error = Herald::builder()
            .handlers_under(module_path!())
            .build()
            .expect_err("the registry is invalid");
        let text = error.to_string();
        let file = file!();
        assert_eq!(error.problems.len(), 5, "{text}");
        assert!(
            text.contains("command `test.unlock_login`") && text.contains("has no handler"),
            "{text}"
        );
        assert!(
            text.contains("command `test.block_login` has 2 handlers"),
            "{text}"
        );
        assert!(
            text.contains("handler name `login.alert` is used by 2 handlers"),
            "{text}"
        );
        assert!(
            text.contains("runs on pool `sms`, which is not configured"),
            "{text}"
        );
        assert!(
            text.contains("takes `State<foundation::validation::Sms>`"),
            "{text}"
        );
        assert!(
            error
                .problems
                .iter()
                .filter_map(|p| p.location.as_deref())
                .all(|l| l.starts_with(file)),
            "{text}"
        );
    }

    #[tokio::test]
    async fn zero_concurrency_or_queue_is_a_build_error_that_names_the_fix() {
        let error = Herald::builder()
            .handlers_under("nothing::here")
            .default_pool(herald::PoolConfig::new().concurrency(0).queue(0))
            .build()
            .expect_err("bad pool");
        let text = error.to_string();
        assert!(
            text.contains("concurrency 0") && text.contains(".concurrency(n)"),
            "{text}"
        );
        assert!(
            text.contains("queue of 0") && text.contains(".queue(n)"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_rate_override_must_name_a_handler_and_allow_something() {
        let error = Herald::builder()
            .handlers_under("nothing::here")
            .rate(
                "no.such.handler",
                herald::Rate {
                    count: 0,
                    per: std::time::Duration::from_secs(1),
                },
            )
            .build()
            .expect_err("bad override");
        let text = error.to_string();
        assert_eq!(error.problems.len(), 2, "{text}");
        assert!(
            text.contains("names no handler") && text.contains("allows nothing"),
            "{text}"
        );
    }

    #[test]
    fn build_outside_a_tokio_runtime_says_so() {
        let error = Herald::builder()
            .handlers_under("nothing::here")
            .build()
            .expect_err("no runtime");
        assert!(
            error.to_string().contains("inside a tokio runtime"),
            "{error}"
        );
    }
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Herald>();
    assert_send_sync::<herald::HeraldBuilder>();
    assert_send_sync::<herald::Bus>();
    assert_send_sync::<herald::Meta>();
    assert_send_sync::<herald::Envelope>();
    assert_send_sync::<herald::MessageId>();
    assert_send_sync::<herald::Payload>();
    assert_send_sync::<herald::Delivery>();
    assert_send_sync::<herald::CommandReply<u32>>();
    assert_send_sync::<herald::EventOutcome>();
    assert_send_sync::<herald::HandlerError>();
    assert_send_sync::<herald::HandlerFailure>();
    assert_send_sync::<herald::CommandError>();
    assert_send_sync::<herald::PublishError<fan_out::UserSignedUp>>();
    assert_send_sync::<herald::BuildError>();
    assert_send_sync::<herald::StoredError>();
    assert_send_sync::<herald::DeadLetter>();
    assert_send_sync::<herald::InMemoryDeadLetters>();
    assert_send_sync::<herald::LedgerSnapshot>();
    assert_send_sync::<herald::RoutingTable>();
    assert_send_sync::<herald::PoolConfig>();
    assert_send_sync::<herald::PoolStats>();
    assert_send_sync::<herald::ShutdownReport>();
    assert_send_sync::<herald::PublishOptions>();
    assert_send_sync::<herald::Invocation>();
    assert_send_sync::<State<Journal>>();
}

#[cfg(feature = "sqlite")]
#[test]
fn durable_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<herald::outbox::SqliteOutbox>();
    assert_send_sync::<herald::outbox::RelayBuilder>();
    assert_send_sync::<herald::outbox::Relay>();
    assert_send_sync::<herald::outbox::RelayStats>();
    assert_send_sync::<herald::outbox::OutboxStatus>();
    assert_send_sync::<herald::outbox::StoredEvent>();
    assert_send_sync::<herald::outbox::OutboxError>();
    assert_send_sync::<herald::SqliteDeadLetters>();
    assert_send_sync::<herald::inbox::SqliteInbox>();
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<herald::outbox::PgOutbox>();
    assert_send_sync::<herald::PgDeadLetters>();
    assert_send_sync::<herald::inbox::PgInbox>();
}

/// `#[async_handler]` and the derives inside a `macro_rules!` (a user generating one handler per
/// partner, say): the generated code's own locals must resolve whatever hygiene the user's tokens
/// carry.
mod from_a_macro_rules {
    use super::*;
    use herald::HandlerError;

    macro_rules! counting_handler {
        ($event:ident, $name:literal, $handler:ident) => {
            #[derive(Event, Clone, Debug, Serialize, Deserialize)]
            #[event(name = $name)]
            pub(crate) struct $event {
                pub(crate) n: u32,
            }

            #[async_handler]
            async fn $handler(
                event: $event,
                State(seen): State<Arc<AtomicU32>>,
            ) -> Result<(), HandlerError> {
                seen.fetch_add(event.n, Ordering::SeqCst);
                Ok(())
            }
        };
    }

    counting_handler!(PartnerA, "foundation.macro_rules.partner_a", on_partner_a);
    counting_handler!(PartnerB, "foundation.macro_rules.partner_b", on_partner_b);

    #[tokio::test]
    async fn handlers_declared_by_a_macro_rules_run() {
        let seen = Arc::new(AtomicU32::new(0));
        let herald = Herald::builder()
            .handlers_under(module_path!())
            .state(seen.clone())
            .build()
            .expect("valid registry");
        assert!(herald
            .publish(PartnerA { n: 2 })
            .await
            .expect("accepted")
            .await
            .is_success());
        assert!(herald
            .publish(PartnerB { n: 40 })
            .await
            .expect("accepted")
            .await
            .is_success());
        assert_eq!(seen.load(Ordering::SeqCst), 42);
    }
}
