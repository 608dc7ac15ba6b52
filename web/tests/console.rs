//! The console's pages on a real SQLite store: what they show, that they escape what users
//! control, and that every mutation needs a POST with the CSRF token (and is refused read-only).

mod common;

use common::*;
use herald::{DeadLetterStore, FailureKind};
use herald_web::access::Secret;
use herald_web::HeraldWeb;
use std::sync::Arc;

fn router(store: &Store) -> axum::Router {
    HeraldWeb::builder(Arc::new(store.outbox.clone()))
        .build()
        .expect("build")
        .router()
}

#[tokio::test]
async fn the_overview_shows_the_outbox_and_dead_letters_by_handler() {
    let store = store().await;
    store.order("A-1").await;
    store
        .dead_letter(
            "app::send_mail",
            FailureKind::Timeout,
            serde_json::json!({}),
            "slow",
        )
        .await;
    let router = router(&store);
    let page = get(&router, "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("app::send_mail") && page.body.contains("timeout"),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"id="pending""#), "{}", page.body);
    // No runtime handle: said plainly, not shown as zeros.
    assert!(
        page.body.contains("Not reported by this deployment"),
        "{}",
        page.body
    );
    let csp = page.headers["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let htmx = get(&router, "/assets/htmx.min.js").await;
    assert!(
        htmx.status == 200 && htmx.body.contains("htmx"),
        "htmx is served from the binary"
    );
}

#[tokio::test]
async fn user_controlled_text_is_escaped_and_control_characters_are_visible() {
    let store = store().await;
    let hostile = "<script>alert('x')</script>";
    let id = store
        .dead_letter(
            "app::<b>handler</b>",
            FailureKind::Error,
            serde_json::json!({ "note": hostile, "nul": "a\u{0}b", "quote": "\"'&" }),
            "boom <img src=x onerror=alert(1)>\u{0}\u{1b}[31m",
        )
        .await;
    let router = router(&store);
    for uri in [
        "/".to_owned(),
        "/dead-letters".to_owned(),
        format!("/dead-letters/{id}"),
    ] {
        let page = get(&router, &uri).await;
        assert_eq!(page.status, 200, "{uri}");
        assert!(!page.body.contains("<script>alert"), "{uri}: {}", page.body);
        assert!(!page.body.contains("<img src=x"), "{uri}: {}", page.body);
        assert!(!page.body.contains("<b>handler"), "{uri}: {}", page.body);
        assert!(
            !page.body.contains('\u{0}') && !page.body.contains('\u{1b}'),
            "{uri}"
        );
    }
    let detail = get(&router, &format!("/dead-letters/{id}")).await;
    assert!(
        detail.body.contains("&lt;script&gt;alert("),
        "{}",
        detail.body
    );
    assert!(
        detail
            .body
            .contains("&lt;img src=x onerror=alert(1)&gt;\\u{0}\\u{1b}[31m"),
        "{}",
        detail.body
    );
    assert!(
        detail.body.contains(r"a\u0000b"),
        "JSON keeps its escape: {}",
        detail.body
    );
    // A filter value from the URL is escaped too.
    let list = get(&router, "/dead-letters?older_than=%3Cscript%3Ex").await;
    assert!(
        !list.body.contains("<script>x") && list.body.contains("&lt;script&gt;x"),
        "{}",
        list.body
    );
}

#[tokio::test]
async fn redrive_needs_a_post_with_the_csrf_token() {
    let store = store().await;
    let id = store
        .dead_letter(
            "app::send_mail",
            FailureKind::Error,
            serde_json::json!({"to": "kim"}),
            "503",
        )
        .await;
    let router = router(&store);
    let list = get(&router, "/dead-letters").await;
    let csrf = list.csrf();
    let id_text = id.to_string();

    // No GET route mutates.
    let get_redrive = get(&router, "/dead-letters/redrive").await;
    assert_eq!(get_redrive.status, 405);
    // No token, a wrong token, or a cross-site request: refused, nothing moved.
    let refused = post_form(&router, "/dead-letters/redrive", &[("one", &id_text)]).await;
    assert_eq!(refused.status, 403);
    let refused = post_form(
        &router,
        "/dead-letters/redrive",
        &[("one", &id_text), ("csrf", &"0".repeat(64))],
    )
    .await;
    assert_eq!(refused.status, 403);
    let refused = post_form_with(
        &router,
        "/dead-letters/redrive",
        &[("one", &id_text), ("csrf", &csrf)],
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(store.outbox.dead_letters().count().await.expect("count"), 1);

    let done = post_form(
        &router,
        "/dead-letters/redrive",
        &[("one", &id_text), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let location = done.headers["location"].to_str().expect("ascii").to_owned();
    assert!(location.starts_with("/feed?row="), "{location}");
    assert_eq!(store.outbox.dead_letters().count().await.expect("count"), 0);
    assert_eq!(store.outbox.status().await.expect("status").pending, 1);
    let feed = get(&router, &location).await;
    assert!(
        feed.body.contains("back in the outbox as row")
            && feed.body.contains("web_test.order_placed"),
        "{}",
        feed.body
    );
    assert!(feed.body.contains("status-pending"), "{}", feed.body);
}

#[tokio::test]
async fn redrive_selected_or_all_matching_a_filter() {
    let store = store().await;
    let a = store
        .dead_letter("app::a", FailureKind::Error, serde_json::json!(1), "e")
        .await;
    let b = store
        .dead_letter("app::a", FailureKind::Timeout, serde_json::json!(2), "e")
        .await;
    let _c = store
        .dead_letter("app::b", FailureKind::Error, serde_json::json!(3), "e")
        .await;
    let _d = store
        .dead_letter("app::b", FailureKind::Panic, serde_json::json!(4), "e")
        .await;
    let router = router(&store);
    let csrf = get(&router, "/dead-letters").await.csrf();
    let filtered = get(&router, "/dead-letters?handler=app%3A%3Ab").await;
    assert!(
        filtered.body.contains("2 matching of 4"),
        "{}",
        filtered.body
    );
    let filtered = get(&router, "/dead-letters?handler=app%3A%3Ab&kind=panic").await;
    assert!(
        filtered.body.contains("1 matching of 4"),
        "{}",
        filtered.body
    );
    let filtered = get(&router, "/dead-letters?older_than=1h").await;
    assert!(
        filtered.body.contains("0 matching of 4"),
        "{}",
        filtered.body
    );
    let filtered = get(&router, "/dead-letters?older_than=soon").await;
    assert!(
        filtered.body.contains("must be a number and a unit"),
        "{}",
        filtered.body
    );

    // Selected: two ticked ids.
    let (a, b) = (a.to_string(), b.to_string());
    let done = post_form(
        &router,
        "/dead-letters/redrive",
        &[
            ("csrf", &csrf),
            ("scope", "selected"),
            ("id", &a),
            ("id", &b),
        ],
    )
    .await;
    assert_eq!(done.status, 303);
    assert!(done.headers["location"]
        .to_str()
        .expect("ascii")
        .contains("done=redriven&n=2"));
    assert_eq!(store.outbox.dead_letters().count().await.expect("count"), 2);

    // All matching `handler = app::b, kind = panic`: one of the two left.
    let done = post_form(
        &router,
        "/dead-letters/redrive",
        &[
            ("csrf", &csrf),
            ("scope", "matching"),
            ("handler", "app::b"),
            ("kind", "panic"),
        ],
    )
    .await;
    assert_eq!(done.status, 303);
    let left = store.outbox.dead_letters().list(10).await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].failure, Some(FailureKind::Error));
    assert_eq!(store.outbox.status().await.expect("status").pending, 3);
}

#[tokio::test]
async fn purge_asks_for_confirmation_first() {
    let store = store().await;
    store
        .dead_letter("app::a", FailureKind::Error, serde_json::json!(1), "e")
        .await;
    store
        .dead_letter("app::a", FailureKind::Error, serde_json::json!(2), "e")
        .await;
    let router = router(&store);
    let csrf = get(&router, "/dead-letters").await.csrf();
    let confirm = post_form(
        &router,
        "/dead-letters/purge",
        &[("csrf", &csrf), ("scope", "matching")],
    )
    .await;
    assert_eq!(confirm.status, 200);
    assert!(
        confirm.body.contains("Purge 2 dead letter(s)?"),
        "{}",
        confirm.body
    );
    assert_eq!(
        store.outbox.dead_letters().count().await.expect("count"),
        2,
        "nothing purged yet"
    );

    let ids: Vec<String> = store
        .outbox
        .dead_letters()
        .list(10)
        .await
        .expect("list")
        .iter()
        .map(|l| l.id.to_string())
        .collect();
    let done = post_form(
        &router,
        "/dead-letters/purge",
        &[
            ("csrf", &csrf),
            ("confirm", "yes"),
            ("id", &ids[0]),
            ("id", &ids[1]),
        ],
    )
    .await;
    assert_eq!(done.status, 303);
    assert!(done.headers["location"]
        .to_str()
        .expect("ascii")
        .contains("done=purged&n=2"));
    assert_eq!(store.outbox.dead_letters().count().await.expect("count"), 0);
    let after = get(&router, "/dead-letters?done=purged&n=2").await;
    assert!(
        after.body.contains("2 dead letter(s) purged."),
        "{}",
        after.body
    );
}

#[tokio::test]
async fn read_only_hides_and_refuses_mutations() {
    let store = store().await;
    let id = store
        .dead_letter("app::a", FailureKind::Error, serde_json::json!(1), "e")
        .await;
    let router = HeraldWeb::builder(Arc::new(store.outbox.clone()))
        .read_only(true)
        .build()
        .expect("build")
        .router();
    let list = get(&router, "/dead-letters").await;
    assert!(list.body.contains("read-only"), "{}", list.body);
    assert!(
        !list.body.contains("Re-drive") && !list.body.contains("Purge"),
        "{}",
        list.body
    );
    let detail = get(&router, &format!("/dead-letters/{id}")).await;
    assert!(!detail.body.contains("Re-drive"), "{}", detail.body);
    let csrf = list.csrf();
    let refused = post_form(
        &router,
        "/dead-letters/redrive",
        &[("csrf", &csrf), ("one", &id.to_string())],
    )
    .await;
    assert_eq!(refused.status, 403);
    let refused = post_form(
        &router,
        "/dead-letters/purge",
        &[
            ("csrf", &csrf),
            ("one", &id.to_string()),
            ("confirm", "yes"),
        ],
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(store.outbox.dead_letters().count().await.expect("count"), 1);
}

#[tokio::test]
async fn an_access_token_guards_every_page_and_never_shows() {
    let store = store().await;
    store
        .dead_letter("app::a", FailureKind::Error, serde_json::json!(1), "e")
        .await;
    let token = "correct-horse-battery-staple";
    let router = HeraldWeb::builder(Arc::new(store.outbox.clone()))
        .access_token(Secret::new(token))
        .build()
        .expect("build")
        .router();
    for uri in ["/", "/dead-letters", "/outbox", "/feed", "/dead-letters/1"] {
        let answer = get(&router, uri).await;
        assert_eq!(answer.status, 303, "{uri}");
        assert_eq!(answer.headers["location"], "/login", "{uri}");
    }
    let refused = post_form(&router, "/dead-letters/purge", &[("confirm", "yes")]).await;
    assert_eq!(refused.status, 401);

    let login = get(&router, "/login").await;
    let csrf = login.csrf();
    let wrong = post_form(&router, "/login", &[("csrf", &csrf), ("token", "nope")]).await;
    assert_eq!(wrong.status, 401);
    let ok = post_form(&router, "/login", &[("csrf", &csrf), ("token", token)]).await;
    assert_eq!(ok.status, 303);
    let cookie = ok.headers["set-cookie"].to_str().expect("ascii").to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(token),
        "the cookie is not the token: {cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let proxied = post_form_with(
        &router,
        "/login",
        &[("csrf", &csrf), ("token", token)],
        &[("x-forwarded-proto", "https")],
    )
    .await;
    let proxied = proxied.headers["set-cookie"].to_str().expect("ascii");
    assert!(
        proxied.contains("; Secure"),
        "behind an HTTPS proxy: {proxied}"
    );
    let session = cookie.split(';').next().expect("pair").to_owned();
    for uri in ["/", "/dead-letters", "/outbox", "/feed"] {
        let page = get_with(&router, uri, ("cookie", &session)).await;
        assert_eq!(page.status, 200, "{uri}");
        assert!(!page.body.contains(token), "{uri} shows the token");
    }
    let bearer = get_with(&router, "/", ("authorization", &format!("Bearer {token}"))).await;
    assert_eq!(bearer.status, 200);
}

#[tokio::test]
async fn the_outbox_page_and_the_feed_browser() {
    let store = store().await;
    for n in 0..5 {
        store.order(&format!("A-{n}")).await;
    }
    store.mail("kim@example.com").await;
    let router = router(&store);
    let outbox = get(&router, "/outbox").await;
    assert!(
        outbox.body.contains(r#"id="pending""#) && outbox.body.contains(">6<"),
        "{}",
        outbox.body
    );
    assert!(
        outbox.body.contains(r#"id="stuck-keys-none""#),
        "no key is stuck: {}",
        outbox.body
    );
    let first = get(&router, "/feed?after=0&limit=2").await;
    assert_eq!(first.body.matches("data-row=").count(), 2, "{}", first.body);
    assert!(
        first.body.contains(r#"href="/feed?after=2&amp;limit=2""#),
        "{}",
        first.body
    );
    let last = get(&router, "/feed?after=5&limit=2").await;
    assert!(last.body.contains("kim@example.com"), "{}", last.body);
    let empty = get(&router, "/feed?after=6").await;
    assert!(
        empty.body.contains("No events after position 6"),
        "{}",
        empty.body
    );
    let hostile = get(
        &router,
        "/feed?after=-5&limit=999999999999999999999&type=%3Cscript%3E",
    )
    .await;
    assert_eq!(hostile.status, 200);
    assert!(!hostile.body.contains("<script>"), "{}", hostile.body);
}

#[tokio::test]
async fn invalid_utf8_written_by_hand_is_shown_lossily() {
    let store = store().await;
    let id = store
        .dead_letter("app::a", FailureKind::Error, serde_json::json!(1), "e")
        .await;
    // Another tool wrote bytes that are not UTF-8 into the error and the handler name.
    herald::sqlx::query(
        "UPDATE herald_dead_letters SET last_error = CAST(X'626164FF0A3C623E' AS TEXT), handler = CAST(X'6170703A3AC3' AS TEXT) WHERE id = ?1",
    )
    .bind(id.0)
    .execute(store.outbox.pool())
    .await
    .expect("corrupt the row");
    let router = router(&store);
    for uri in [
        "/".to_owned(),
        "/dead-letters".to_owned(),
        format!("/dead-letters/{id}"),
    ] {
        let page = get(&router, &uri).await;
        assert_eq!(page.status, 200, "{uri}: {}", page.body);
        assert!(page.body.contains("app::\u{FFFD}"), "{uri}: {}", page.body);
    }
    let detail = get(&router, &format!("/dead-letters/{id}")).await;
    assert!(
        detail.body.contains("bad\u{FFFD}\n&lt;b&gt;"),
        "{}",
        detail.body
    );
}

#[tokio::test]
async fn the_outbox_page_lists_stuck_keys_escaped() {
    let store = store().await;
    // Rows written as a relay leaves them: the key's first message failed twice and waits for
    // its next attempt; two more of the key wait behind it. The key and the error carry markup
    // and a NUL, which the page must show as text.
    herald::sqlx::raw_sql(
        "INSERT INTO herald_outbox (message_id, message_type, key, payload, occurred_at, fail_count,
                                    last_error, failed_at, next_attempt_at)
         VALUES ('0190b2a8-0000-7000-8000-0000000000a1', 'web_test.order_placed',
                 'acct-<i>7</i>' || char(0), '{}', '2026-01-01T00:00:00.000Z', 2,
                 '<b>card declined</b>', '2026-01-01T00:00:05.000Z', 99999999999999),
                ('0190b2a8-0000-7000-8000-0000000000a2', 'web_test.order_placed',
                 'acct-<i>7</i>' || char(0), '{}', '2026-01-01T00:00:01.000Z', 0, NULL, NULL, 0),
                ('0190b2a8-0000-7000-8000-0000000000a3', 'web_test.order_placed',
                 'acct-<i>7</i>' || char(0), '{}', '2026-01-01T00:00:02.000Z', 0, NULL, NULL, 0)",
    )
    .execute(store.outbox.pool())
    .await
    .expect("a stuck key");
    let outbox = get(&router(&store), "/outbox").await;
    let body = &outbox.body;
    assert!(body.contains(r#"id="stuck-keys""#), "{body}");
    assert!(
        body.contains("acct-&lt;i&gt;7&lt;/i&gt;\\u{0}"),
        "the key, escaped: {body}"
    );
    assert!(!body.contains("<i>7</i>"), "{body}");
    assert!(body.contains("&lt;b&gt;card declined&lt;/b&gt;"), "{body}");
    assert!(body.contains(r#"href="/feed?row=1""#), "{body}");
    assert!(body.contains(r#"<td class="waiting">2</td>"#), "{body}");
}
