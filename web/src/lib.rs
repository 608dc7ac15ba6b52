//! Herald over HTTP, as one [axum](https://docs.rs/axum) router that an application mounts in its
//! own server or lets Herald serve (`herald serve`):
//!
//! - [`metrics`]: a Prometheus exporter on the observer seam (`GET /metrics`);
//! - [`console`]: server-rendered pages to see pools, the ledger, outbox lag and dead letters, and
//!   to re-drive or purge them;
//! - [`feed`]: the HTTP event feed (`GET /events?after=&limit=&wait=`), whose consumers keep their
//!   own position (or store it here, [`positions`]);
//! - [`access`]: what guards them: loopback by default, access tokens, CSRF tokens on every
//!   mutation, read-only mode.
//!
//! Everything reads and writes through the ops port of the durable store ([`OutboxOps`]), so the
//! same router works on SQLite, PostgreSQL and MySQL, in the application's process (give it the
//! [`Herald`] handle too, and the overview shows pools and the ledger) or in `herald serve`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use herald_core::outbox::{self, SqliteOutbox};
//! use herald_web::{access::Secret, HeraldWeb};
//! use std::sync::Arc;
//!
//! let pool = outbox::sqlite::connect("app.db").await?;
//! let outbox = SqliteOutbox::new(pool).await?;
//! let web = HeraldWeb::builder(Arc::new(outbox))
//!     .feed_consumer("billing", Secret::new("a long random token"))
//!     .build()?;
//! // Mount `web.router()` in your own axum app, or serve it on loopback:
//! herald_web::serve(web, "127.0.0.1:8080".parse()?, std::future::pending()).await?;
//! # Ok(()) }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod access;
pub mod console;
pub mod feed;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod positions;

use access::{Access, Keys, Secret};
use axum::Router;
use herald_core::feed::OutboxOps;
use herald_core::Herald;
use positions::{InMemoryPositionStore, PositionStore};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What every route shares: the store, the optional runtime handle, access rules and keys.
pub(crate) struct Shared {
    pub(crate) ops: Arc<dyn OutboxOps>,
    pub(crate) herald: Option<Herald>,
    pub(crate) access: Access,
    pub(crate) keys: Keys,
    pub(crate) positions: Arc<dyn PositionStore>,
    pub(crate) max_wait: Duration,
    pub(crate) poll_interval: Duration,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("ops", &self.ops)
            .field("herald", &self.herald.is_some())
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// The console and the event feed of one store, ready to be routed. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HeraldWeb {
    shared: Arc<Shared>,
    extra: Option<Router>,
}

/// Builds a [`HeraldWeb`]: the store, then what to show and who may do what.
#[must_use]
pub struct HeraldWebBuilder {
    ops: Arc<dyn OutboxOps>,
    herald: Option<Herald>,
    access: Access,
    positions: Option<Arc<dyn PositionStore>>,
    max_wait: Duration,
    poll_interval: Duration,
    extra: Option<Router>,
}

impl fmt::Debug for HeraldWebBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeraldWebBuilder")
            .field("access", &self.access)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

/// The longest `wait` of a feed long-poll by default.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

impl HeraldWeb {
    /// Starts a builder over the ops port of a durable store (`SqliteOutbox`, `PgOutbox`,
    /// `MySqlOutbox`, or any other [`OutboxOps`]).
    pub fn builder(ops: Arc<dyn OutboxOps>) -> HeraldWebBuilder {
        HeraldWebBuilder {
            ops,
            herald: None,
            access: Access::default(),
            positions: None,
            max_wait: DEFAULT_MAX_WAIT,
            poll_interval: Duration::from_millis(250),
            extra: None,
        }
    }

    /// The router: the console under `/`, the feed under `/events`, `/consumers/{name}/position`
    /// and `/openapi.json`, plus the routes given to [`HeraldWebBuilder::merge`] (the place where
    /// the Prometheus `/metrics` router of [`metrics`] joins them).
    pub fn router(&self) -> Router {
        let router = console::router(self.shared.clone()).merge(feed::router(self.shared.clone()));
        match &self.extra {
            // The `/metrics` router of `metrics.rs` is merged here, beside the console and the
            // feed: it keeps its own access rules (scrapers send no console cookie).
            Some(extra) => router.merge(extra.clone()),
            None => router,
        }
    }

    /// Whether mutations are refused (read-only mode).
    pub fn read_only(&self) -> bool {
        self.shared.access.read_only
    }

    /// Checks that serving on `addr` is safe: an address other than loopback needs an access
    /// token or a trusted proxy header.
    ///
    /// # Errors
    /// [`ServeError::Unprotected`], whose message says how to fix it.
    pub fn check_bind(&self, addr: SocketAddr) -> Result<(), ServeError> {
        self.shared.access.check_bind(addr)
    }
}

impl HeraldWebBuilder {
    /// The application's runtime handle: the overview then shows its pools and its ledger.
    /// Without it (as in `herald serve`), the overview shows what the store knows.
    pub fn herald(mut self, herald: Herald) -> Self {
        self.herald = Some(herald);
        self
    }

    /// The console's access token: a browser logs in with it once (a session cookie that holds
    /// an HMAC of it, never the token), a script sends `Authorization: Bearer <token>`. Required
    /// (or [`proxy_header`](Self::proxy_header)) when bound to anything but loopback.
    pub fn access_token(mut self, token: Secret) -> Self {
        self.access.console_token = Some(token);
        self
    }

    /// Trusts a header that a reverse proxy sets after authenticating the user (for example
    /// `X-Forwarded-User`): a request carrying it, non-empty, may use the console. Only safe when
    /// nothing but the proxy can reach this server. An invalid header name is reported by
    /// [`build`](Self::build).
    pub fn proxy_header(mut self, name: &str) -> Self {
        self.access.proxy_header = Some(name.to_ascii_lowercase());
        self
    }

    /// Refuses every mutation (re-drive, purge, stored positions) and hides their buttons.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.access.read_only = read_only;
        self
    }

    /// A consumer of the event feed, with its own bearer token. Once one is configured, the feed
    /// needs a consumer token; a consumer may read and store only its own position.
    pub fn feed_consumer(mut self, name: impl Into<String>, token: Secret) -> Self {
        self.access.consumers.push((name.into(), token));
        self
    }

    /// Where consumers' acknowledged positions are kept ([`positions::FilePositionStore`] for
    /// positions that survive restarts). Default: in memory.
    pub fn positions(mut self, store: Arc<dyn PositionStore>) -> Self {
        self.positions = Some(store);
        self
    }

    /// The longest long-poll `wait` the feed honours (longer requests are cut to it). Default
    /// [`DEFAULT_MAX_WAIT`].
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How often a long-poll looks for new events. Default 250 ms.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Routes served beside the console and the feed, such as the Prometheus `/metrics` router.
    /// They are not behind the console's access rules.
    pub fn merge(mut self, routes: Router) -> Self {
        self.extra = Some(match self.extra.take() {
            Some(existing) => existing.merge(routes),
            None => routes,
        });
        self
    }

    /// Checks the settings (all problems at once) and builds.
    ///
    /// # Errors
    /// [`BuildError`] listing every problem: an invalid proxy header name, an empty token, a
    /// consumer configured twice or with an unusable name, a zero poll interval.
    pub fn build(self) -> Result<HeraldWeb, BuildError> {
        let mut problems = self.access.problems();
        if self.poll_interval.is_zero() {
            problems.push("the poll interval must be above zero".to_owned());
        }
        if !problems.is_empty() {
            return Err(BuildError { problems });
        }
        let keys = Keys::generate().map_err(|e| BuildError {
            problems: vec![format!("cannot draw a random key: {e}")],
        })?;
        let shared = Shared {
            ops: self.ops,
            herald: self.herald,
            access: self.access,
            keys,
            positions: self
                .positions
                .unwrap_or_else(|| Arc::new(InMemoryPositionStore::default())),
            max_wait: self.max_wait,
            poll_interval: self.poll_interval,
        };
        Ok(HeraldWeb {
            shared: Arc::new(shared),
            extra: self.extra,
        })
    }
}

/// The settings given to [`HeraldWebBuilder`] do not work; every problem is listed.
#[derive(Debug, thiserror::Error)]
#[error("herald-web settings: {}", problems.join("; "))]
pub struct BuildError {
    /// Each problem, in words.
    pub problems: Vec<String>,
}

/// [`serve`] could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Bound to an address other than loopback without any access control.
    #[error("refusing to serve on {addr} without an access token: anyone who can reach it could re-drive and purge dead letters. Either bind to 127.0.0.1 (the default), or set an access token (`--token`, env HERALD_WEB_TOKEN; `HeraldWebBuilder::access_token`), or name the header your authenticating reverse proxy sets (`--proxy-header X-Forwarded-User`)")]
    Unprotected {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The address could not be bound or the server failed.
    #[error("cannot serve on {addr}: {source}")]
    Io {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Serves [`HeraldWeb::router`] on `addr` until `shutdown` completes. Refuses an address other
/// than loopback when no access token or proxy header is configured.
///
/// # Errors
/// [`ServeError::Unprotected`] (with the fix in its message) or [`ServeError::Io`].
pub async fn serve(
    web: HeraldWeb,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    web.check_bind(addr)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Io { addr, source })?;
    serve_on(web, listener, shutdown).await
}

/// Like [`serve`] on a listener already bound (tests bind port 0). Checks the listener's address
/// the same way.
///
/// # Errors
/// As [`serve`].
pub async fn serve_on(
    web: HeraldWeb,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    web.check_bind(addr)?;
    tracing::info!(%addr, read_only = web.read_only(), "herald web console and feed listening");
    axum::serve(listener, web.router())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeError::Io { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<HeraldWeb>();
        check::<HeraldWebBuilder>();
        check::<BuildError>();
        check::<ServeError>();
        check::<Secret>();
    }
}
