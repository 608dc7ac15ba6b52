//! The HTTP event feed on a real SQLite store: pages and `next`, the type filter, long-poll,
//! per-consumer tokens and stored positions, and hostile input (never a 5xx, always JSON).

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use herald_web::access::Secret;
use herald_web::positions::FilePositionStore;
use herald_web::HeraldWeb;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn open_router(store: &Store) -> axum::Router {
    HeraldWeb::builder(Arc::new(store.outbox.clone()))
        .poll_interval(Duration::from_millis(20))
        .build()
        .expect("build")
        .router()
}

#[tokio::test]
async fn pages_follow_next_without_gaps_or_repeats() {
    let store = store().await;
    for n in 0..7 {
        store.order(&format!("A-{n}")).await;
    }
    let router = open_router(&store);
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = get(&router, &format!("/events?after={after}&limit=3")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let json = page.json();
        let events = json["events"].as_array().expect("events").clone();
        if events.is_empty() {
            assert_eq!(json["next"], after, "an empty page keeps the position");
            break;
        }
        assert!(events.len() <= 3);
        for event in &events {
            seen.push(
                event["payload"]["order"]
                    .as_str()
                    .expect("order")
                    .to_owned(),
            );
        }
        after = json["next"].as_i64().expect("next");
        assert_eq!(
            after,
            events.last().expect("last")["position"]
                .as_i64()
                .expect("position")
        );
    }
    let expected: Vec<String> = (0..7).map(|n| format!("A-{n}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn the_type_filter_moves_next_past_other_types() {
    let store = store().await;
    store.order("A-1").await;
    store.mail("kim").await;
    store.order("A-2").await;
    store.order("A-3").await;
    let router = open_router(&store);
    let page = get(
        &router,
        "/events?after=0&limit=10&type=web_test.mail_requested",
    )
    .await
    .json();
    assert_eq!(page["events"].as_array().expect("events").len(), 1);
    assert_eq!(page["events"][0]["payload"]["to"], "kim");
    assert_eq!(page["next"], 4, "next moves past the orders too");
    let none = get(&router, "/events?after=0&limit=10&type=nothing.like.this")
        .await
        .json();
    assert_eq!(none["events"].as_array().expect("events").len(), 0);
    assert_eq!(none["next"], 4);
}

#[tokio::test]
async fn long_poll_answers_when_an_event_arrives_or_when_wait_ends() {
    let store = store().await;
    let router = open_router(&store);
    let started = Instant::now();
    let empty = get(&router, "/events?after=0&wait=1").await.json();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(empty["events"].as_array().expect("events").len(), 0);
    assert_eq!(empty["next"], 0);

    let waiting = tokio::spawn({
        let router = router.clone();
        async move { get(&router, "/events?after=0&wait=10").await.json() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    store.order("late").await;
    let page = waiting.await.expect("join");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered once the event came"
    );
    assert_eq!(page["events"][0]["payload"]["order"], "late");
}

#[tokio::test]
async fn the_server_caps_wait() {
    let store = store().await;
    let router = HeraldWeb::builder(Arc::new(store.outbox.clone()))
        .max_wait(Duration::from_millis(300))
        .poll_interval(Duration::from_millis(20))
        .build()
        .expect("build")
        .router();
    let started = Instant::now();
    let page = get(&router, "/events?after=0&wait=3600").await;
    assert_eq!(page.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

fn consumers_router(
    store: &Store,
    positions: Arc<FilePositionStore>,
    read_only: bool,
) -> axum::Router {
    HeraldWeb::builder(Arc::new(store.outbox.clone()))
        .feed_consumer("billing", Secret::new("tok-billing"))
        .feed_consumer("search", Secret::new("tok-search"))
        .positions(positions)
        .read_only(read_only)
        .build()
        .expect("build")
        .router()
}

async fn put_position(router: &axum::Router, name: &str, token: &str, body: &str) -> Answer {
    call(
        router,
        Request::put(format!("/consumers/{name}/position"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request"),
    )
    .await
}

#[tokio::test]
async fn consumers_need_their_token_and_touch_only_their_own_position() {
    let store = store().await;
    store.order("A-1").await;
    let path = store.dir.path().join("positions.json");
    let positions = Arc::new(FilePositionStore::open(&path).await.expect("open"));
    let router = consumers_router(&store, positions, false);

    assert_eq!(get(&router, "/events").await.status, 401);
    let wrong = get_with(&router, "/events", ("authorization", "Bearer tok-nobody")).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["error"]
        .as_str()
        .expect("error")
        .contains("Bearer"));
    let ok = get_with(&router, "/events", ("authorization", "Bearer tok-billing")).await;
    assert_eq!(ok.status, 200);

    let never = get_with(
        &router,
        "/consumers/billing/position",
        ("authorization", "Bearer tok-billing"),
    )
    .await;
    assert_eq!(
        never.json(),
        serde_json::json!({ "consumer": "billing", "position": null })
    );
    let stored = put_position(&router, "billing", "tok-billing", r#"{"position": 41}"#).await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    let read = get_with(
        &router,
        "/consumers/billing/position",
        ("authorization", "Bearer tok-billing"),
    )
    .await;
    assert_eq!(read.json()["position"], 41);

    // Another consumer's position: neither read nor written.
    let theirs = get_with(
        &router,
        "/consumers/billing/position",
        ("authorization", "Bearer tok-search"),
    )
    .await;
    assert_eq!(theirs.status, 403);
    let theirs = put_position(&router, "billing", "tok-search", r#"{"position": 0}"#).await;
    assert_eq!(theirs.status, 403);
    for bad in [
        r#"{"position": -1}"#,
        r#"{"position": "x"}"#,
        "{}",
        "not json",
        r#"{"position": 1, "extra": 2}"#,
        r#"{"position": 99999999999999999999}"#,
    ] {
        let answer = put_position(&router, "billing", "tok-billing", bad).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        answer.json();
    }
    // The file survives a restart of the server.
    let reopened = Arc::new(FilePositionStore::open(&path).await.expect("reopen"));
    let router = consumers_router(&store, reopened.clone(), true);
    let read = get_with(
        &router,
        "/consumers/billing/position",
        ("authorization", "Bearer tok-billing"),
    )
    .await;
    assert_eq!(read.json()["position"], 41);
    let refused = put_position(&router, "billing", "tok-billing", r#"{"position": 42}"#).await;
    assert_eq!(refused.status, 403, "read-only");
}

#[tokio::test]
async fn without_consumers_positions_are_refused() {
    let store = store().await;
    let router = open_router(&store);
    let answer = put_position(&router, "billing", "anything", r#"{"position": 1}"#).await;
    assert_eq!(answer.status, 403);
    assert!(answer.body.contains("--feed-consumer"), "{}", answer.body);
}

/// A small deterministic generator: the same hostile inputs on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }
}

/// The property schemathesis checks from the OpenAPI document, in Rust: whatever the query
/// string or the token, the feed answers 200, 400 or 401 with a JSON body (never a 5xx), and a
/// 200 has the documented shape.
#[tokio::test]
async fn hostile_queries_and_tokens_never_break_the_feed() {
    let store = store().await;
    store.order("A-1").await;
    store.mail("kim").await;
    let router = HeraldWeb::builder(Arc::new(store.outbox.clone()))
        .feed_consumer("billing", Secret::new("tok-billing"))
        .max_wait(Duration::from_millis(50))
        .poll_interval(Duration::from_millis(10))
        .build()
        .expect("build")
        .router();
    let names = [
        "after", "limit", "type", "wait", "x", "after[]", "", "%00", "AFTER",
    ];
    let values = [
        "0",
        "1",
        "-1",
        "-9223372036854775808",
        "9223372036854775807",
        "9223372036854775808",
        "99999999999999999999999",
        "1000",
        "1001",
        "0x10",
        "1e3",
        "",
        "%00",
        "%FF%FE",
        "%3Cscript%3E",
        "NaN",
        "null",
        "true",
        "1.5",
        " 1",
        "%20",
        "web_test.order_placed",
        "😀",
        "a%26b%3Dc",
    ];
    let tokens = [
        "Bearer tok-billing",
        "Bearer tok-billinG",
        "Bearer ",
        "bearer tok-billing",
        "Basic dG9r",
        "tok-billing",
        "Bearer tok-billing\u{7f}",
    ];
    let mut rng = Lcg(12);
    for round in 0..400 {
        let mut query = String::new();
        for _ in 0..(rng.next() % 4) {
            if !query.is_empty() {
                query.push(if rng.next().is_multiple_of(10) {
                    ';'
                } else {
                    '&'
                });
            }
            query.push_str(rng.pick(&names));
            if !rng.next().is_multiple_of(8) {
                query.push('=');
                query.push_str(rng.pick(&values));
            }
        }
        let token = rng.pick(&tokens);
        let uri = format!("/events?{query}");
        let Ok(request) = Request::get(&uri)
            .header("authorization", token)
            .body(Body::empty())
        else {
            continue; // not even a valid HTTP request: nothing reaches the server
        };
        let answer = call(&router, request).await;
        assert!(
            [200, 400, 401].contains(&answer.status.as_u16()),
            "round {round}: {uri} with `{token}`: {} {}",
            answer.status,
            answer.body
        );
        let json = answer.json();
        if answer.status == 200 {
            assert!(
                json["events"].is_array() && json["next"].as_i64().is_some_and(|n| n >= 0),
                "{uri}: {json}"
            );
        } else {
            assert!(json["error"].is_string(), "{uri}: {json}");
        }
    }
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let store = store().await;
    let document = get(&open_router(&store), "/openapi.json").await;
    assert_eq!(document.status, 200);
    assert_eq!(document.json()["openapi"], "3.0.3");
}

#[tokio::test]
async fn serving_beyond_loopback_needs_a_token() {
    let store = store().await;
    let open = HeraldWeb::builder(Arc::new(store.outbox.clone()))
        .build()
        .expect("build");
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let refused = herald_web::serve_on(open, listener, async {})
        .await
        .expect_err("refused");
    let message = refused.to_string();
    assert!(
        message.contains("127.0.0.1") && message.contains("--token"),
        "{message}"
    );

    let protected = HeraldWeb::builder(Arc::new(store.outbox.clone()))
        .access_token(Secret::new("t0ken"))
        .build()
        .expect("build");
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    herald_web::serve_on(protected, listener, async {})
        .await
        .expect("served and shut down");
}
