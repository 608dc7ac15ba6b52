//! Deadline SLAs over HTTP: their series on `/metrics` (`herald_sla_events_total`,
//! `herald_sla_expectations`, `herald_start_late_total`) after a workload with one expectation
//! fulfilled on time, one breached and one fulfilled late, and their counts on the console's
//! overview, with and without the runtime handle.

mod common;

use common::*;
use herald::{async_handler, Event, Herald, PoolConfig, Sla, State};
use herald_web::metrics::HeraldMetrics;
use herald_web::HeraldWeb;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const T: Duration = Duration::from_millis(200);

fn sla() -> Sla {
    Sla::named("order-mailed")
        .after::<OrderPlaced>()
        .expect::<MailRequested>()
        .within(T)
        .correlate(|placed| placed.order.clone(), |mail| mail.to.clone())
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value of the one sample of `name` whose labels are exactly `labels` (in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    let values: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (found, rest) = series.split_once('{')?;
            let mut have: Vec<String> = rest
                .trim_end_matches('}')
                .split(',')
                .map(str::to_owned)
                .collect();
            have.sort();
            (found == name && have == wanted).then(|| value.parse().expect("a number"))
        })
        .collect();
    assert_eq!(
        values.len(),
        1,
        "one `{name}` {labels:?} sample in:\n{text}"
    );
    values[0]
}

mod series {
    use super::*;

    #[derive(Event, Clone, Debug, Serialize, Deserialize)]
    #[event(name = "web_sla.export")]
    pub(crate) struct Export {
        pub(crate) hold: bool,
    }

    #[derive(Clone)]
    struct Gate(Arc<Semaphore>);

    #[async_handler(pool = "one", start_within = "50ms")]
    async fn export(event: Export, State(gate): State<Gate>) {
        if event.hold {
            drop(gate.0.acquire().await);
        }
    }

    #[tokio::test]
    async fn the_sla_series_count_what_happened() {
        let gate = Gate(Arc::new(Semaphore::new(0)));
        let metrics = HeraldMetrics::new();
        let herald = metrics
            .build(
                Herald::builder()
                    .handlers_under(module_path!())
                    .state(gate.clone())
                    .pool("one", PoolConfig::new().concurrency(1))
                    .sla(sla())
                    .sla_sweep_interval(Duration::from_millis(10)),
            )
            .expect("valid registry");
        let placed = |order: &str| OrderPlaced {
            order: order.into(),
        };
        let mail = |to: &str| MailRequested { to: to.into() };
        for order in ["on-time", "never", "late"] {
            drop(herald.publish(placed(order)).await.expect("publish"));
        }
        drop(herald.publish(mail("on-time")).await.expect("publish"));
        eventually("two breaches", || {
            herald.ledger().slas["order-mailed"].breached == 2
        })
        .await;
        drop(herald.publish(mail("late")).await.expect("publish"));
        // A second export waits behind the first past its `start_within`.
        let first = herald
            .publish(Export { hold: true })
            .await
            .expect("publish");
        let second = herald
            .publish(Export { hold: false })
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(120)).await;
        gate.0.add_permits(1);
        first.await;
        second.await;

        let text = metrics.render().await;
        let event = |event: &str| {
            sample(
                &text,
                "herald_sla_events_total",
                &[("sla", "order-mailed"), ("event", event)],
            )
        };
        assert_eq!(event("opened"), 3.0);
        assert_eq!(event("fulfilled"), 1.0);
        assert_eq!(event("breached"), 2.0);
        assert_eq!(event("fulfilled_late"), 1.0);
        let state = |state: &str| {
            sample(
                &text,
                "herald_sla_expectations",
                &[("sla", "order-mailed"), ("state", state)],
            )
        };
        assert_eq!(state("pending"), 0.0);
        assert_eq!(state("fulfilled"), 1.0);
        assert_eq!(state("fulfilled_late"), 1.0);
        assert_eq!(state("breached"), 1.0);
        let handler = format!("{}::export", module_path!());
        assert_eq!(
            sample(&text, "herald_start_late_total", &[("handler", &handler)]),
            1.0
        );
        assert!(text.contains("# HELP herald_sla_events_total "), "{text}");
        assert!(text.contains("# HELP herald_sla_expectations "), "{text}");
        assert!(
            !text.contains("herald_metrics_sample_errors_total"),
            "{text}"
        );
    }
}

mod console {
    use super::*;

    #[tokio::test]
    async fn the_overview_counts_the_store_s_expectations_with_and_without_the_runtime() {
        let store = store().await;
        let empty = HeraldWeb::builder(Arc::new(store.outbox.clone()))
            .build()
            .expect("build")
            .router();
        let page = get(&empty, "/").await;
        assert!(page.body.contains(r#"id="no-slas""#), "{}", page.body);

        let herald = Herald::builder()
            .handlers_under(module_path!())
            .sla(sla())
            .sla_store(store.outbox.clone())
            .sla_sweep_interval(Duration::from_secs(3600))
            .build()
            .expect("valid registry");
        store.order("<b>A-1</b>").await;
        store.order("A-2").await;
        store.mail("A-2").await;
        tokio::time::sleep(T).await;
        assert_eq!(herald.sweep_slas().await.expect("sweep"), 1);

        // `herald serve`: the store's counts only.
        let page = get(&empty, "/").await;
        assert!(page.body.contains(r#"id="slas""#), "{}", page.body);
        assert!(page.body.contains("order-mailed"), "{}", page.body);
        assert!(
            !page.body.contains(r#"id="declared-slas""#),
            "{}",
            page.body
        );
        let row = page
            .body
            .split("<code>order-mailed</code>")
            .nth(1)
            .expect("the SLA's row");
        let cells: Vec<&str> = row
            .split("</td>")
            .skip(1)
            .take(4)
            .map(|cell| cell.rsplit('>').next().unwrap_or_default())
            .collect();
        assert_eq!(
            cells,
            ["0", "1", "0", "1"],
            "pending, fulfilled, late, breached: {row}"
        );

        // In the application: the declared SLA and this process's counts too.
        let with_runtime = HeraldWeb::builder(Arc::new(store.outbox.clone()))
            .herald(herald.clone())
            .build()
            .expect("build")
            .router();
        let page = get(&with_runtime, "/").await;
        assert!(page.body.contains(r#"id="declared-slas""#), "{}", page.body);
        assert!(
            page.body
                .contains("order-mailed: after web_test.order_placed expect web_test.mail_requested within 200ms"),
            "{}",
            page.body
        );
        assert!(
            !page.body.contains("<b>A-1"),
            "keys are not shown unescaped"
        );
    }
}
