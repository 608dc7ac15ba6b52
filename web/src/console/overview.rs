//! The overview: outbox lag, dead letters by handler and kind, pools and ledger, consumers' lag,
//! deadline SLAs.

use super::dead_letters::SCAN_LIMIT;
use super::layout::{time, visible};
use super::outbox;
use super::store_error;
use crate::Shared;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use herald_core::sla::SlaStatus;
use herald_core::Herald;
use maud::{html, Markup};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Consumers further behind than this are shown as "1000+".
const LAG_CAP: usize = 1000;

async fn live(shared: &Shared) -> Result<Markup, super::Failure> {
    let status = shared.ops.status().await.map_err(store_error)?;
    let letters = shared
        .ops
        .dead_letters()
        .list(SCAN_LIMIT)
        .await
        .map_err(store_error)?;
    let mut by_handler: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for letter in &letters {
        *by_handler
            .entry((
                letter.handler.as_str(),
                letter.failure.map_or("none", |k| k.as_str()),
            ))
            .or_default() += 1;
    }
    let sla_status = shared.ops.sla_status().await.map_err(store_error)?;
    let mut consumers = Vec::new();
    for (name, _) in &shared.access.consumers {
        let position = shared.positions.load(name).await.map_err(store_error)?;
        let behind = match position {
            Some(position) => Some(
                shared
                    .ops
                    .events_after(position, LAG_CAP)
                    .await
                    .map_err(store_error)?
                    .len(),
            ),
            None => None,
        };
        consumers.push((name.as_str(), position, behind));
    }
    Ok(html! {
        h2 { "Outbox" }
        (outbox::cards(&status))
        h2 { "Dead letters by handler and kind" }
        @if by_handler.is_empty() {
            p #no-dead-letters { "No dead letters." }
        } @else {
            table #dead-letters-by-handler {
                thead { tr { th { "handler" } th { "failure" } th.num { "dead letters" } th {} } }
                tbody {
                    @for ((handler, kind), count) in &by_handler {
                        tr {
                            td { code { (visible(handler)) } }
                            td { (kind) }
                            td.num { (count) }
                            td { a href={"/dead-letters?" (form_urlencoded::Serializer::new(String::new()).append_pair("handler", handler).append_pair("kind", kind).finish())} { "see them" } }
                        }
                    }
                }
            }
            @if status.dead_letters as usize > letters.len() { p.muted { "Counted over the oldest " (SCAN_LIMIT) "." } }
        }
        h2 { "Pools and ledger" }
        @if let Some(herald) = &shared.herald {
            table #pools {
                thead { tr { th { "pool" } th.num { "concurrency" } th.num { "queued now" } th.num { "queue bound" } th.num { "max queued" } th { "overload" } } }
                tbody {
                    @for pool in herald.pool_stats() {
                        tr { td { (visible(&pool.name)) } td.num { (pool.concurrency) } td.num { (pool.depth) } td.num { (pool.queue) } td.num { (pool.max_depth) } td { (format!("{:?}", pool.overload)) } }
                    }
                }
            }
            @let ledger = herald.ledger();
            table #ledger {
                thead { tr {
                    th { "handler" } th.num { "accepted" } th.num { "succeeded" } th.num { "failed attempts" } th.num { "retried" }
                    th.num { "dead-lettered" } th.num { "dropped" } th.num { "deduplicated" } th.num { "deferred" } th.num { "in flight" } th.num { "queued" }
                } }
                tbody {
                    @for (name, c) in ledger.handlers.iter().map(|(n, c)| (*n, c)).chain(std::iter::once(("total", &ledger.total))) {
                        tr {
                            td { code { (visible(name)) } }
                            td.num { (c.accepted) } td.num { (c.succeeded) } td.num { (c.failed_attempts) } td.num { (c.retried) }
                            td.num { (c.dead_lettered) } td.num { (c.dropped) } td.num { (c.deduplicated) } td.num { (c.deferred) } td.num { (c.in_flight) } td.num { (c.queued) }
                        }
                    }
                }
            }
            @if !ledger.total.is_balanced() { p.error { "The ledger does not balance: " (ledger.to_string()) } }
        } @else {
            p.note #no-runtime {
                "Not reported by this deployment: this server reads the database only (" code { "herald serve" } "). "
                "Mount " code { "herald::web" } " in the application with " code { ".herald(handle)" } " to see its pools and ledger."
            }
        }
        h2 { "Feed consumers" }
        @if consumers.is_empty() {
            p.note { "No feed consumers are configured (" code { "--feed-consumer NAME=TOKEN" } "): consumers that keep their own offset are not seen here." }
        } @else {
            table #consumers {
                thead { tr { th { "consumer" } th.num { "stored position" } th.num { "events behind" } } }
                tbody {
                    @for (name, position, behind) in &consumers {
                        tr {
                            td { (name) }
                            td.num { (position.map_or("never stored".to_owned(), |p| p.to_string())) }
                            td.num { (match behind { Some(n) if *n >= LAG_CAP => format!("{LAG_CAP}+"), Some(n) => n.to_string(), None => "-".to_owned() }) }
                        }
                    }
                }
            }
        }
        h2 { "Deadline SLAs" }
        (slas(&sla_status, shared.herald.as_ref()))
    })
}

/// The store's SLA expectations by state, and, with the runtime, its declared SLAs and what this
/// process recorded.
fn slas(status: &[SlaStatus], herald: Option<&Herald>) -> Markup {
    let declared = herald.map(Herald::slas).unwrap_or_default();
    let recorded = herald
        .map(|herald| herald.ledger().slas)
        .unwrap_or_default();
    html! {
        @if status.is_empty() {
            p.note #no-slas {
                "No SLA expectations in this store. Declare one with " code { "HeraldBuilder::sla" }
                " and keep its expectations here with " code { ".sla_store(outbox.clone())" } "."
            }
        } @else {
            table #slas {
                thead { tr {
                    th { "SLA" } th.num { "pending" } th.num { "fulfilled" } th.num { "fulfilled late" }
                    th.num { "breached" } th { "next due" }
                } }
                tbody {
                    @for sla in status {
                        tr {
                            td { code { (visible(&sla.sla)) } }
                            td.num { (sla.pending) }
                            td.num { (sla.fulfilled) }
                            td.num.bad[sla.fulfilled_late > 0] { (sla.fulfilled_late) }
                            td.num.bad[sla.breached > 0] { (sla.breached) }
                            td { (sla.next_due.as_ref().map_or("-".to_owned(), time)) }
                        }
                    }
                }
            }
            p.muted { "Breached: due with nothing fulfilling them (each emitted one " code { "SlaBreached" } "); a late B moves one to fulfilled late." }
        }
        @if !declared.is_empty() {
            table #declared-slas {
                thead { tr { th { "declared" } th.num { "opened here" } th.num { "fulfilled here" } th.num { "late here" } th.num { "breached here" } } }
                tbody {
                    @for sla in declared {
                        @let here = recorded.get(sla.name()).copied().unwrap_or_default();
                        tr {
                            td { code { (visible(&sla.to_string())) } }
                            td.num { (here.opened) } td.num { (here.fulfilled) } td.num { (here.fulfilled_late) } td.num { (here.breached) }
                        }
                    }
                }
            }
        }
    }
}

pub(super) async fn show(State(shared): State<Arc<Shared>>) -> Response {
    match live(&shared).await {
        Ok(content) => Html(
            super::layout::page(
                "Overview",
                Some(&shared),
                html! {
                    h1 { "Overview" }
                    // Refreshed every 5 s by htmx (the page works without it).
                    div #live hx-get="/" hx-select="#live" hx-target="this" hx-swap="outerHTML" hx-trigger="every 5s" {
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
