//! The HTTP event feed: stored events in commit order for consumers that keep their own offset.
//!
//! - `GET /events?after=<position>&limit=<n>&type=<name>&wait=<seconds>` answers
//!   `{"events": [...], "next": <position>}`. Pass `next` as the following `after`. It is
//!   [`EventFeed::events_after`](herald_core::feed::EventFeed::events_after) over HTTP, so it is
//!   gap-safe the same way: an event that commits late is never skipped. With `type`, only events
//!   of that message type are returned, but `next` still moves past the others. With `wait`, an
//!   empty answer is held until an event arrives or `wait` seconds pass (capped by the server).
//! - `GET`/`PUT /consumers/{name}/position` reads and stores a consumer's acknowledged position
//!   ([`PositionStore`](crate::positions::PositionStore)); a consumer may only touch its own.
//! - `GET /openapi.json`: the OpenAPI 3 document of these routes.
//!
//! Once a consumer is configured ([`feed_consumer`](crate::HeraldWebBuilder::feed_consumer)),
//! every call needs `Authorization: Bearer <its token>`.

use crate::access::FeedCaller;
use crate::Shared;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use herald_core::feed::StoredEvent;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The largest `limit` a call may ask for.
pub const MAX_LIMIT: usize = 1000;
/// The `limit` when none is given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `wait` a call may ask for (the server then cuts it to its own maximum).
pub const MAX_WAIT_PARAM: u64 = 3600;
/// With a `type` filter, how many events one call looks through at most before it answers
/// (possibly empty, with `next` moved on), so a rare type never makes a call scan the whole store.
pub const MAX_SCAN: usize = 10_000;

/// The OpenAPI 3 document of the feed (also served at `/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/events", get(events))
        .route(
            "/consumers/{name}/position",
            get(get_position).put(put_position),
        )
        .route("/openapi.json", get(openapi))
        .with_state(shared)
}

/// One page of the feed, as `GET /events` answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedPage {
    /// The events, in position order.
    pub events: Vec<StoredEvent>,
    /// The `after` of the next call: the last position looked at (or the `after` given).
    pub next: i64,
}

/// A consumer's stored position, as `GET /consumers/{name}/position` answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumerPosition {
    /// The consumer's name.
    pub consumer: String,
    /// Its last acknowledged position, or `null` when it never stored one.
    pub position: Option<i64>,
}

/// The body of `PUT /consumers/{name}/position`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionUpdate {
    /// The position to store (0 or more).
    pub position: i64,
}

#[derive(Debug, Deserialize)]
struct FeedQuery {
    after: Option<i64>,
    limit: Option<usize>,
    #[serde(rename = "type")]
    message_type: Option<String>,
    wait: Option<u64>,
}

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn unauthorized(shared: &Shared) -> ApiError {
    let what = if shared.access.consumers.is_empty() {
        "this feed needs the console's access token: send `Authorization: Bearer <token>`"
    } else {
        "send `Authorization: Bearer <token>` with your consumer's token"
    };
    ApiError(StatusCode::UNAUTHORIZED, what.to_owned())
}

fn store_unavailable(error: impl std::fmt::Display) -> ApiError {
    // The store's error goes to the log, not to the caller (it may name hosts or tables).
    tracing::warn!(%error, "event feed: the store could not be read");
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the event store could not be read; try again later".to_owned(),
    )
}

async fn events(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Json<FeedPage>, ApiError> {
    let Some(_caller) = shared.access.feed_caller(&shared.keys, &headers) else {
        return Err(unauthorized(&shared));
    };
    let Query(query) = query.map_err(|rejection| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("bad query: {}", rejection.body_text()),
        )
    })?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "`after` must be 0 or more".to_owned(),
        ));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("`limit` must be 1 to {MAX_LIMIT}"),
        ));
    }
    let wait = query.wait.unwrap_or(0);
    if wait > MAX_WAIT_PARAM {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("`wait` must be 0 to {MAX_WAIT_PARAM} seconds"),
        ));
    }
    let message_type = query.message_type.filter(|t| !t.is_empty());
    let deadline = Instant::now() + Duration::from_secs(wait).min(shared.max_wait);
    let page = read_page(&shared, after, limit, message_type.as_deref(), deadline).await?;
    Ok(Json(page))
}

/// Reads up to `limit` events after `after` (of `message_type` if given), waiting until
/// `deadline` while there is nothing new.
async fn read_page(
    shared: &Shared,
    after: i64,
    limit: usize,
    message_type: Option<&str>,
    deadline: Instant,
) -> Result<FeedPage, ApiError> {
    let mut next = after;
    let mut scanned = 0usize;
    loop {
        let batch = shared
            .ops
            .events_after(next, limit)
            .await
            .map_err(store_unavailable)?;
        let Some(last) = batch.last() else {
            // Nothing after `next`: wait for more, or answer empty.
            let now = Instant::now();
            if now >= deadline {
                return Ok(FeedPage {
                    events: Vec::new(),
                    next,
                });
            }
            tokio::time::sleep(shared.poll_interval.min(deadline - now)).await;
            continue;
        };
        next = last.position;
        scanned += batch.len();
        let events: Vec<StoredEvent> = match message_type {
            Some(wanted) => batch
                .into_iter()
                .filter(|event| event.message_type == wanted)
                .collect(),
            None => batch,
        };
        if !events.is_empty() || scanned >= MAX_SCAN {
            return Ok(FeedPage { events, next });
        }
    }
}

fn own_position(shared: &Shared, headers: &HeaderMap, name: &str) -> Result<(), ApiError> {
    match shared.access.feed_caller(&shared.keys, headers) {
        None => Err(unauthorized(shared)),
        Some(FeedCaller::Consumer(caller)) if caller == name => Ok(()),
        Some(FeedCaller::Consumer(_)) => Err(ApiError(
            StatusCode::FORBIDDEN,
            "a consumer may only read and store its own position".to_owned(),
        )),
        Some(FeedCaller::Anonymous) => Err(ApiError(
            StatusCode::FORBIDDEN,
            "stored positions need named consumers: configure one with its token (`herald serve --feed-consumer NAME=TOKEN`)".to_owned(),
        )),
    }
}

async fn get_position(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ConsumerPosition>, ApiError> {
    own_position(&shared, &headers, &name)?;
    let position = shared
        .positions
        .load(&name)
        .await
        .map_err(store_unavailable)?;
    Ok(Json(ConsumerPosition {
        consumer: name,
        position,
    }))
}

async fn put_position(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<PositionUpdate>, JsonRejection>,
) -> Result<Json<ConsumerPosition>, ApiError> {
    own_position(&shared, &headers, &name)?;
    if shared.access.read_only {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "this server is read-only: positions cannot be stored".to_owned(),
        ));
    }
    let Json(update) = body.map_err(|rejection| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("bad body: {}", rejection.body_text()),
        )
    })?;
    if update.position < 0 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "`position` must be 0 or more".to_owned(),
        ));
    }
    shared
        .positions
        .store(&name, update.position)
        .await
        .map_err(store_unavailable)?;
    Ok(Json(ConsumerPosition {
        consumer: name,
        position: Some(update.position),
    }))
}

async fn openapi() -> impl IntoResponse {
    ([("content-type", "application/json")], OPENAPI)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_json_and_names_every_route() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).expect("JSON");
        assert_eq!(document["openapi"], "3.0.3");
        assert!(document["paths"]["/events"]["get"].is_object());
        assert!(document["paths"]["/consumers/{name}/position"]["put"].is_object());
        assert_eq!(
            document["paths"]["/events"]["get"]["parameters"][1]["schema"]["maximum"],
            MAX_LIMIT
        );
    }
}
