//! What both services need to reach RabbitMQ and to stop cleanly: the broker flags and
//! `until_stopped` (SIGTERM or Ctrl-C).

use herald::transport::rabbitmq::{RabbitMq, RabbitMqBuilder};
use std::time::Duration;

/// Where the order events travel. Both services must be given the same queue and expiry: the
/// queue is declared by whichever starts first, and RabbitMQ refuses a second declaration with
/// other arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BrokerArgs {
    /// The RabbitMQ broker (`amqp://user:password@host:port/vhost`; vhost `/` is `%2f`).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub(crate) amqp_url: String,
    /// The durable queue carrying `OrderPlaced` (its retries use `<queue>.herald-delay`).
    #[arg(long, env = "ORDERS_QUEUE", default_value = "orders.order_placed")]
    pub(crate) queue: String,
    /// Lets RabbitMQ delete the queues after this many seconds without use (for tests and
    /// demos; off by default).
    #[arg(long, env = "ORDERS_QUEUE_EXPIRES_SECS")]
    pub(crate) queue_expires_secs: Option<u64>,
}

impl BrokerArgs {
    /// The transport's builder for this queue.
    pub(crate) fn builder(&self) -> RabbitMqBuilder {
        let builder = RabbitMq::builder(&self.amqp_url, &self.queue);
        match self.queue_expires_secs {
            Some(secs) => builder.expires_after(Duration::from_secs(secs)),
            None => builder,
        }
    }

    /// Connects, or says how to fix it.
    pub(crate) async fn connect(&self, builder: RabbitMqBuilder) -> Result<RabbitMq, String> {
        builder.connect().await.map_err(|error| {
            format!(
                "cannot use RabbitMQ queue `{}`: {error}. Start the broker (e.g. `docker run -d -p 5672:5672 rabbitmq:3`) or point `--amqp-url`/`AMQP_URL` at yours",
                self.queue
            )
        })
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT): the services then stop taking work, let what runs
/// finish and exit. A kill -9 skips all that; the outbox and the inbox make it survivable.
pub(crate) async fn until_stopped() -> &'static str {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = tokio::signal::ctrl_c().await;
                return "Ctrl-C";
            }
        };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
    }
}

/// Logs to stderr, `info` unless `RUST_LOG` says otherwise.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
