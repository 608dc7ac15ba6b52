//! The conformance kit for [Herald](https://docs.rs/herald) backends: one suite that every
//! [`DeadLetterStore`](herald::DeadLetterStore) passes, one that every
//! [`MessageSource`](herald::ports::MessageSource) passes when a real `Herald` and relay drive it,
//! and one that every broker transport (a [`MessageSink`](herald::ports::MessageSink) and a
//! source at once) passes, in the style of apalis's `generic_storage_test!` and Watermill's
//! universal pub/sub tests.
//!
//! A backend is checked with one line per suite in a test file; each named case becomes a test:
//!
//! ```ignore
//! use herald_conformance::{dead_letter_suite, pubsub_suite, restart_suite, source_suite};
//!
//! // A fresh, empty store for the case named by the argument.
//! async fn make_store(case: &'static str) -> MyDeadLetters { /* ... */ }
//! // A fresh, empty source (see `source::SourceHarness`) for the case.
//! async fn make_source(case: &'static str) -> MyHarness { /* ... */ }
//! // A harness opening topics of the case's own (see `pubsub::PubSubHarness`).
//! async fn make_pubsub(case: &'static str) -> MyBrokerHarness { /* ... */ }
//!
//! dead_letter_suite!(my_backend_dead_letters, make_store);
//! source_suite!(my_backend, make_source);
//! pubsub_suite!(my_broker_pubsub, make_pubsub);
//! // In a test binary of its own: restarts the real broker (`pubsub::RestartHarness`).
//! restart_suite!(my_broker_restarts, make_pubsub);
//! ```
//!
//! The pub/sub suite's cases end with an [`accounting::Accounting`] of every id confirmed and
//! delivered (nothing lost, nothing unexpected, duplicates counted); a case whose capability the
//! transport does not declare reports itself as not applicable (see [`pubsub`]).
//!
//! `conformance/tests/backends.rs` runs the suites against the in-memory transport, SQLite,
//! PostgreSQL, MySQL, Redis, RabbitMQ and NATS (each behind its feature);
//! `conformance/tests/restarts.rs` restarts the real Redis, RabbitMQ and NATS servers.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod accounting;
pub mod dead_letters;
pub mod pubsub;
pub mod source;

/// Runs one case on a fresh multi-threaded tokio runtime. Used by the suite macros; not public
/// API.
#[doc(hidden)]
pub fn __run<F: std::future::Future<Output = ()>>(case: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("the conformance kit could not start tokio: {error}"));
    runtime.block_on(case);
}

/// Expands to one `#[test]` per case of `$suite`, each given a fresh subject by `$make`.
#[doc(hidden)]
#[macro_export]
macro_rules! __suite {
    ($suite:ident, $name:ident, $make:expr, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $case() {
                    $crate::__run(async {
                        let subject = ($make)(::core::stringify!($case)).await;
                        $crate::$suite::$case(subject).await;
                    });
                }
            )*
        }
    };
}

/// Runs the dead-letter store suite: a module `$name` with one test per case of
/// [`dead_letters`]. `$make` is an `async fn(&'static str) -> S` (or a closure returning a
/// future) that gives a fresh, empty store for the case named by its argument.
#[macro_export]
macro_rules! dead_letter_suite {
    ($name:ident, $make:expr) => {
        $crate::__suite!(
            dead_letters,
            $name,
            $make,
            [
                put_then_get_returns_the_entry,
                get_of_a_missing_id_is_none,
                list_is_oldest_first_and_bounded,
                take_removes_and_returns_once,
                purge_one_then_all,
                count_follows_puts_and_removals,
                evicted_is_zero_within_bounds,
                a_second_put_for_the_same_message_and_handler_updates_the_first,
                every_failure_kind_and_reason_round_trips,
                nul_and_non_ascii_text_round_trips,
                a_large_payload_round_trips,
            ]
        );
    };
}

/// Runs the source suite: a module `$name` with one test per case of [`source`], each driving a
/// real `Herald` and relay over the source. `$make` is an `async fn(&'static str) -> H` with
/// `H:` [`source::SourceHarness`], giving a fresh, empty source for the case named by its
/// argument.
#[macro_export]
macro_rules! source_suite {
    ($name:ident, $make:expr) => {
        $crate::__suite!(
            source,
            $name,
            $make,
            [
                every_message_is_delivered_once,
                payload_and_headers_arrive_intact,
                a_retry_waits_for_the_backoff_and_counts_attempts,
                failed_for_good_goes_to_the_dead_letters_with_its_kind,
                a_rejecting_pool_releases_without_losing_a_message,
                messages_of_one_key_are_handled_in_order,
                a_handler_slower_than_the_lease_runs_once,
                a_malformed_message_is_dead_lettered_and_the_relay_carries_on,
                a_mixed_workload_balances_the_ledger,
            ]
        );
    };
}

/// Runs the pub/sub suite ([`pubsub`], Watermill's universal pub/sub tests): a module `$name`
/// with one test per case, each driving real `Herald`s and relays over a broker transport that
/// is both sink and source. `$make` is an `async fn(&'static str) -> H` with
/// `H:` [`pubsub::PubSubHarness`], giving a fresh harness (topics of its own) for the case named
/// by its argument. A case whose capability the transport does not declare is reported as not
/// applicable (see [`pubsub`]).
#[macro_export]
macro_rules! pubsub_suite {
    ($name:ident, $make:expr) => {
        $crate::__suite!(
            pubsub,
            $name,
            $make,
            [
                publish_subscribe_keeps_payload_and_headers,
                concurrent_subscribers_share_one_source,
                many_topics_at_once,
                a_nacked_message_is_delivered_again_after_the_backoff,
                no_next_message_of_a_key_before_the_ack,
                a_new_subscriber_continues_after_one_closes,
                closing_subscribers_at_once_while_publishing,
                handler_errors_do_not_stop_the_rest,
                messages_of_one_key_arrive_in_order,
                a_closed_publisher_has_flushed_what_was_confirmed,
                a_cancelled_publish_loses_nothing,
                a_topic_never_reaches_another_topics_subscriber,
                a_new_subscriber_receives_old_messages,
                each_consumer_group_gets_every_message,
            ]
        );
    };
}

/// Runs the broker-restart case of the pub/sub suite
/// ([`pubsub::the_consumer_resumes_after_two_broker_restarts`]): a module `$name` with one test.
/// `$make` gives a fresh [`pubsub::RestartHarness`]. Put it in a test binary of its own whose
/// harness holds one process-wide lock around each restart, since a restart disturbs every other
/// test using that broker.
#[macro_export]
macro_rules! restart_suite {
    ($name:ident, $make:expr) => {
        $crate::__suite!(
            pubsub,
            $name,
            $make,
            [the_consumer_resumes_after_two_broker_restarts]
        );
    };
}
