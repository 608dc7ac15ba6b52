//! The outbox page: what waits for delivery and how far delivery lags.

use super::layout::{duration, time};
use super::store_error;
use crate::Shared;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use herald_core::feed::OutboxStatus;
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

pub(super) async fn page_content(shared: &Shared) -> Result<Markup, super::Failure> {
    let status = shared.ops.status().await.map_err(store_error)?;
    Ok(html! {
        (cards(&status))
        p.muted {
            "Oldest pending row published: "
            (status.oldest_pending_at.as_ref().map_or("none pending".to_owned(), time))
        }
        p.note {
            "Stuck ordering keys are not reported by the ops port of this store: a key whose first pending row keeps failing shows here as "
            em { "retrying" } " and a growing lag."
        }
    })
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
