//! The event feed browser: pages through `events_after`, as an HTTP consumer would.

use super::layout::{json, time, visible};
use super::{store_error, FormData};
use crate::Shared;
use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use herald_core::feed::StoredEvent;
use maud::html;
use std::sync::Arc;

/// The most events one page shows.
const MAX_PAGE: usize = 200;
/// How far `row=` looks for an outbox row (in events from `after`).
const FIND_SCAN: usize = 100_000;

pub(super) async fn show(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let form = FormData::parse(query.unwrap_or_default().as_bytes());
    let mut after = form
        .get("after")
        .and_then(|a| a.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0);
    let limit = form
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, MAX_PAGE);
    let wanted_type = form
        .get("type")
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let row: Option<i64> = form.get("row").and_then(|r| r.parse().ok());

    // `row=N`: find the page that holds outbox row N (positions are not ids on PostgreSQL).
    let mut events: Vec<StoredEvent>;
    let mut scanned = 0;
    loop {
        let batch = match shared
            .ops
            .events_after(after, if row.is_some() { 1000 } else { limit })
            .await
        {
            Ok(batch) => batch,
            Err(error) => return store_error(error).into_response(),
        };
        match row {
            Some(row) if !batch.is_empty() && scanned < FIND_SCAN => {
                if let Some(index) = batch.iter().position(|e| e.id == row) {
                    let start = index.saturating_sub(limit / 2);
                    events = batch.into_iter().skip(start).take(limit).collect();
                    break;
                }
                scanned += batch.len();
                after = batch.last().map_or(after, |e| e.position);
            }
            _ => {
                events = batch;
                events.truncate(limit);
                break;
            }
        }
    }
    let first_after = events.first().map_or(after, |e| e.position - 1);
    let next = events.last().map(|e| e.position);
    let shown: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| wanted_type.as_deref().is_none_or(|t| e.message_type == t))
        .collect();
    let content = html! {
        h1 { "Event feed" }
        @if form.get("done") == Some("redriven") {
            @if let Some(row) = row {
                p.notice role="status" { "The dead letter is back in the outbox as row " (row) ": the running relay delivers it (this page shows its status; reload to follow it)." }
            }
        }
        form.filters method="get" action="/feed" {
            label { "After position" input name="after" type="number" min="0" value=(first_after.max(0)); }
            label { "Limit" input name="limit" type="number" min="1" max=(MAX_PAGE) value=(limit); }
            label { "Message type" input name="type" value=[wanted_type.as_deref()]; }
            button type="submit" { "Show" }
        }
        p.muted { "Consumers read the same events over HTTP: " code { "GET /events?after=" (first_after.max(0)) "&limit=" (limit) } "." }
        @if shown.is_empty() {
            p #no-events { "No events after position " (after) "." }
        } @else {
            table #events {
                thead { tr { th.num { "position" } th.num { "row" } th { "published" } th { "type" } th { "key" } th { "status" } th { "payload" } } }
                tbody {
                    @for event in &shown {
                        tr data-row=(event.id) .highlight[Some(event.id) == row] {
                            td.num { (event.position) }
                            td.num { (event.id) }
                            td { (time(&event.occurred_at)) }
                            td { (visible(&event.message_type)) }
                            td { (visible(event.key.as_deref().unwrap_or("-"))) }
                            td class={"status status-" (visible(&event.status))} { (visible(&event.status)) }
                            td { details { summary { "payload" } pre { (json(&event.payload)) } } }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p.actions {
                a href={"/feed?after=0&limit=" (limit)} { "From the start" }
                a #next-page href={"/feed?after=" (next) "&limit=" (limit)} { "Next page →" }
            }
        }
    };
    Html(super::layout::page("Event feed", Some(&shared), content).into_string()).into_response()
}
