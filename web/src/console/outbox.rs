//! The outbox page: what waits for delivery and how far delivery lags.

use super::layout::{age, duration, time, visible};
use super::store_error;
use crate::Shared;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use herald_core::feed::{OutboxStatus, StuckKey};
use maud::{html, Markup};
use std::sync::Arc;

/// The outbox's counts as cards (also on the overview).
pub(super) fn cards(status: &OutboxStatus) -> Markup {
    let card = |id: &str, label: &str, value: String, bad: bool| {
        html! { div.card.bad[bad] id=(id) { div.value { (value) } div.label { (label) } } }
    };
    html! {
        div.cards {
            (card("pending", "pending", status.pending.to_string(), false))
            (card("in-flight", "in flight (leased by a relay)", status.in_flight.to_string(), false))
            (card("retrying", "retrying", status.retrying.to_string(), status.retrying > 0))
            (card("lag", "lag (oldest pending)", status.lag.map_or("0".to_owned(), duration), false))
            (card("failed", "failed rows", status.failed.to_string(), status.failed > 0))
            (card("processed", "processed rows (kept)", status.processed.to_string(), false))
            (card("dead-letter-count", "dead letters", status.dead_letters.to_string(), status.dead_letters > 0))
        }
    }
}

/// Stuck ordering keys listed on the page, oldest first.
const STUCK_KEYS_SHOWN: usize = 50;

pub(super) async fn page_content(shared: &Shared) -> Result<Markup, super::Failure> {
    let status = shared.ops.status().await.map_err(store_error)?;
    let stuck = shared
        .ops
        .stuck_keys(STUCK_KEYS_SHOWN)
        .await
        .map_err(store_error)?;
    Ok(html! {
        (cards(&status))
        p.muted {
            "Oldest pending row published: "
            (status.oldest_pending_at.as_ref().map_or("none pending".to_owned(), time))
        }
        h2 { "Stuck ordering keys" }
        (stuck_keys(&stuck))
    })
}

/// Keys whose oldest pending message keeps failing, with the messages waiting behind it.
fn stuck_keys(stuck: &[StuckKey]) -> Markup {
    if stuck.is_empty() {
        return html! {
            p.muted #stuck-keys-none {
                "None: no ordering key has a failing message with later messages waiting behind it."
            }
        };
    }
    html! {
        p.muted {
            "The oldest pending message of each key below failed and waits for its next attempt; "
            "the key's later messages wait behind it (per-key order). Fix the cause, or let it "
            "fail for good to its dead letter, and the key moves on. Oldest first, at most "
            (STUCK_KEYS_SHOWN) "."
        }
        table #stuck-keys {
            thead { tr { th { "key" } th { "held by row" } th { "type" } th { "failed attempts" } th { "last failed" } th { "last error" } th { "waiting behind" } } }
            tbody {
                @for key in stuck {
                    tr {
                        td.key { (visible(&key.key)) }
                        td { a href=(format!("/feed?row={}", key.head)) { "#" (key.head) } }
                        td { (visible(&key.message_type)) }
                        td { (key.failed_attempts) }
                        td { (key.last_failed_at.as_ref().map_or("-".to_owned(), |at| format!("{} ago", age(at)))) }
                        td.error { (key.last_error.as_deref().map_or("-".to_owned(), visible)) }
                        td.waiting { (key.waiting) }
                    }
                }
            }
        }
    }
}

pub(super) async fn show(State(shared): State<Arc<Shared>>) -> Response {
    match page_content(&shared).await {
        Ok(content) => Html(
            super::layout::page(
                "Outbox",
                Some(&shared),
                html! {
                    h1 { "Outbox" }
                    div #live hx-get="/outbox" hx-select="#live" hx-target="this" hx-swap="outerHTML" hx-trigger="every 5s" {
                        (content)
                    }
                },
            )
            .into_string(),
        )
        .into_response(),
        Err(failure) => failure.into_response(),
    }
}
