//! A SQLite store with dead letters and events, and requests against the router.
#![allow(dead_code, unreachable_pub)]

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use herald::outbox::{self, SqliteOutbox};
use herald::{DeadLetter, DeadLetterId, DeadLetterReason, DeadLetterStore, Envelope, FailureKind};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

#[derive(herald::Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "web_test.order_placed")]
pub struct OrderPlaced {
    pub order: String,
}

#[derive(herald::Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "web_test.mail_requested")]
pub struct MailRequested {
    pub to: String,
}

pub struct Store {
    pub dir: tempfile::TempDir,
    pub outbox: SqliteOutbox,
}

pub async fn store() -> Store {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = outbox::sqlite::connect(dir.path().join("app.db"))
        .await
        .expect("open");
    let outbox = SqliteOutbox::new(pool).await.expect("migrate");
    Store { dir, outbox }
}

impl Store {
    pub async fn dead_letter(
        &self,
        handler: &str,
        kind: FailureKind,
        payload: serde_json::Value,
        error: &str,
    ) -> DeadLetterId {
        let now = chrono::Utc::now();
        self.outbox
            .dead_letters()
            .put(DeadLetter {
                id: DeadLetterId(0),
                envelope: Envelope::new("web_test.order_placed"),
                payload,
                handler: handler.into(),
                reason: DeadLetterReason::Failed,
                failure: Some(kind),
                attempts: 3,
                first_error: Some(error.into()),
                last_error: Some(error.into()),
                first_failed_at: Some(now),
                last_failed_at: Some(now),
                dead_lettered_at: now,
            })
            .await
            .expect("put")
    }

    pub async fn order(&self, order: &str) {
        let mut conn = self.outbox.pool().acquire().await.expect("connection");
        self.outbox
            .publish(
                &mut *conn,
                OrderPlaced {
                    order: order.into(),
                },
            )
            .await
            .expect("publish");
    }

    pub async fn mail(&self, to: &str) {
        let mut conn = self.outbox.pool().acquire().await.expect("connection");
        self.outbox
            .publish(&mut *conn, MailRequested { to: to.into() })
            .await
            .expect("publish");
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The CSRF token of the page's forms.
    pub fn csrf(&self) -> String {
        let start = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field")
            + 19;
        self.body[start..start + 64].to_owned()
    }
}

pub async fn call(router: &axum::Router, request: Request<Body>) -> Answer {
    let response: Response<Body> = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(router: &axum::Router, uri: &str) -> Answer {
    call(
        router,
        Request::get(uri).body(Body::empty()).expect("request"),
    )
    .await
}

pub async fn get_with(router: &axum::Router, uri: &str, header: (&str, &str)) -> Answer {
    call(
        router,
        Request::get(uri)
            .header(header.0, header.1)
            .body(Body::empty())
            .expect("request"),
    )
    .await
}

pub async fn post_form(router: &axum::Router, uri: &str, form: &[(&str, &str)]) -> Answer {
    post_form_with(router, uri, form, &[]).await
}

pub async fn post_form_with(
    router: &axum::Router,
    uri: &str,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Answer {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut request =
        Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    call(router, request.body(Body::from(body)).expect("request")).await
}
