//! Logging in with the access token: the session cookie holds an HMAC of it, never the token.

use super::layout::{csrf_input, page};
use super::FormData;
use crate::access::{self, CSRF_FIELD};
use crate::Shared;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use std::sync::Arc;

fn login_page(shared: &Shared, failed: bool) -> String {
    page(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if shared.access.console_token.is_none() {
                p.note { "This console has no access token: there is nothing to log in with." }
                p { a href="/" { "Go to the overview" } }
            } @else {
                @if failed { p.error role="alert" { "That is not the access token." } }
                form method="post" action="/login" {
                    (csrf_input(shared))
                    label { "Access token " input type="password" name="token" autocomplete="current-password" autofocus; }
                    " "
                    button type="submit" { "Log in" }
                }
                p.note { "The token is the one given to " code { "herald serve --token" } " (or " code { "HERALD_WEB_TOKEN" } ")." }
            }
        },
    )
    .into_string()
}

pub(super) async fn form(State(shared): State<Arc<Shared>>) -> Html<String> {
    Html(login_page(&shared, false))
}

pub(super) async fn submit(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    if access::cross_site(&headers)
        || !form
            .get(CSRF_FIELD)
            .is_some_and(|token| shared.keys.csrf_ok(token))
    {
        return super::refusal(
            StatusCode::FORBIDDEN,
            "Stale login form: reload and try again.",
        );
    }
    match shared
        .access
        .login(&shared.keys, form.get("token").unwrap_or_default())
    {
        Some(session) => (
            [(
                header::SET_COOKIE,
                access::session_cookie(&session, &headers),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        None => {
            tracing::info!("console: a login with a wrong token was refused");
            (StatusCode::UNAUTHORIZED, Html(login_page(&shared, true))).into_response()
        }
    }
}

pub(super) async fn logout(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    if access::cross_site(&headers)
        || !form
            .get(CSRF_FIELD)
            .is_some_and(|token| shared.keys.csrf_ok(token))
    {
        return super::refusal(StatusCode::FORBIDDEN, "Stale form: reload and try again.");
    }
    (
        [(header::SET_COOKIE, access::session_cookie("", &headers))],
        Redirect::to("/login"),
    )
        .into_response()
}
