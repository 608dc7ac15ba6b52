//! The web console: server-rendered pages (maud, htmx vendored into the binary) over the ops port.
//!
//! | page | path |
//! |---|---|
//! | overview: outbox lag, dead letters by handler and kind, pools and ledger (when given the [`Herald`](herald_core::Herald) handle), feed consumers' lag | `GET /` |
//! | dead letters: filter by handler, kind, reason, age; re-drive one, selected or all matching; purge with a confirmation step | `GET /dead-letters`, `GET /dead-letters/{id}`, `POST /dead-letters/redrive`, `POST /dead-letters/purge` |
//! | outbox: pending, in flight, retrying, oldest, lag | `GET /outbox` |
//! | event feed browser (pages through `events_after`) | `GET /feed` |
//! | log in with the access token | `GET`/`POST /login`, `POST /logout` |
//!
//! Every mutation is a `POST` carrying the CSRF token; read-only mode hides and refuses them (see
//! [`access`]). Every value shown is HTML-escaped by maud, and control characters
//! (NUL included) are shown as `\u{..}` escapes.

mod dead_letters;
mod events;
mod layout;
mod login;
mod outbox;
mod overview;

use crate::access::{self, CSRF_FIELD};
use crate::Shared;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// htmx, vendored from the npm package `htmx.org` (BSD Zero Clause licence, `web/assets/`).
const HTMX: &str = include_str!("../../assets/htmx.min.js");
const CSS: &str = include_str!("../../assets/console.css");
const ICON: &str = include_str!("../../assets/favicon.svg");

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let guarded = Router::new()
        .route("/", get(overview::show))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/{id}", get(dead_letters::detail))
        .route("/dead-letters/redrive", post(dead_letters::redrive))
        .route("/dead-letters/purge", post(dead_letters::purge))
        .route("/outbox", get(outbox::show))
        .route("/feed", get(events::show))
        .route("/logout", post(login::logout))
        .route_layer(middleware::from_fn_with_state(shared.clone(), guard));
    Router::new()
        .merge(guarded)
        .route("/login", get(login::form).post(login::submit))
        .route("/assets/htmx.min.js", get(htmx))
        .route("/assets/console.css", get(css))
        .route("/assets/favicon.svg", get(icon))
        .route("/favicon.ico", get(icon))
        .layer(middleware::from_fn(security_headers))
        .with_state(shared)
}

/// Lets in only callers the access rules accept; a browser without a session goes to `/login`.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if shared
        .access
        .console_allowed(&shared.keys, request.headers())
    {
        return next.run(request).await;
    }
    if request.method() == Method::GET {
        Redirect::to("/login").into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "log in first: the console needs its access token",
        )
            .into_response()
    }
}

/// Pages are not cached, framed, sniffed, or allowed to load anything but their own assets.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn htmx() -> Response {
    asset(HTMX, "text/javascript; charset=utf-8")
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn icon() -> Response {
    asset(ICON, "image/svg+xml")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A submitted form, with repeated fields kept (`id=1&id=2`).
#[derive(Debug, Default)]
pub(crate) struct FormData(Vec<(String, String)>);

impl FormData {
    pub(crate) fn parse(body: &[u8]) -> Self {
        FormData(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why a page is not served: a refusal in words, or a store failure (details in the log only).
#[derive(Debug)]
pub(crate) enum Failure {
    Refused(StatusCode, String),
    Store,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Refused(status, message) => refusal(status, &message),
            Failure::Store => refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store could not be read or written; the server's log has the details.",
            ),
        }
    }
}

/// A mutation's form, once its CSRF token, its origin and the read-only mode are checked.
pub(crate) fn mutation(
    shared: &Shared,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<FormData, Failure> {
    if shared.access.read_only {
        return Err(Failure::Refused(
            StatusCode::FORBIDDEN,
            "This console is read-only: re-drive and purge are turned off.".to_owned(),
        ));
    }
    let form = FormData::parse(body);
    if access::cross_site(headers)
        || !form
            .get(CSRF_FIELD)
            .is_some_and(|token| shared.keys.csrf_ok(token))
    {
        return Err(Failure::Refused(
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or stale (the server restarted?): reload the page and try again.".to_owned(),
        ));
    }
    Ok(form)
}

pub(crate) fn refusal(status: StatusCode, message: &str) -> Response {
    let page = layout::page(
        "Refused",
        None,
        maud::html! {
            h1 { "Refused" }
            p.error { (message) }
            p { a href="/" { "Back to the overview" } }
        },
    );
    (status, Html(page.into_string())).into_response()
}

/// An error of the store, shown without its details (they go to the log).
pub(crate) fn store_error(error: impl std::fmt::Display) -> Failure {
    tracing::warn!(%error, "console: the store failed");
    Failure::Store
}
