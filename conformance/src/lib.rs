//! The conformance kit for [Herald](https://docs.rs/herald) backends: one suite that every
//! [`DeadLetterStore`](herald::DeadLetterStore) passes, and one that every
//! [`MessageSource`](herald::ports::MessageSource) passes when a real `Herald` and relay drive it,
//! in the style of apalis's `generic_storage_test!` and Watermill's universal pub/sub tests.
//!
//! A backend is checked with one line per suite in a test file; each named case becomes a test:
//!
//! ```ignore
//! use herald_conformance::{dead_letter_suite, source_suite};
//!
//! // A fresh, empty store for the case named by the argument.
//! async fn make_store(case: &'static str) -> MyDeadLetters { /* ... */ }
//! // A fresh, empty source (see `source::SourceHarness`) for the case.
//! async fn make_source(case: &'static str) -> MyHarness { /* ... */ }
//!
//! dead_letter_suite!(my_backend_dead_letters, make_store);
//! source_suite!(my_backend, make_source);
//! ```
//!
//! `conformance/tests/` runs both suites against the in-memory transport, SQLite and PostgreSQL.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod dead_letters;
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
