//! `Herald`: the cheap-to-clone handle to a running runtime.

use crate::model::dead_letter::{DeadLetter, DeadLetterId};

use crate::contract::handler::HandlerDescriptor;
use crate::engine::breaker::Breaker;
use crate::engine::counters::HandlerCounters;
use crate::engine::dedupe::DedupeWindow;
use crate::engine::delay::Delays;
use crate::engine::lanes::KeyLanes;
use crate::engine::observe::BreakerState;
use crate::engine::pool::{Pool, PoolStats};
use crate::engine::registry::RoutingTable;
use crate::engine::route::Forward;
use crate::engine::sla::Slas;
use crate::model::ledger::LedgerSnapshot;
use crate::model::message::MessageDescriptor;
use crate::ports::dead_letters::{DeadLetterError, DeadLetterStore};
use governor::DefaultDirectRateLimiter;
use rustc_hash::FxHashMap;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio_util::task::TaskTracker;

/// The runtime: publish events, send commands, read the ledger, shut down.
///
/// Cheap to clone (one `Arc`), `Send + Sync`. Build it with [`Herald::builder`].
#[derive(Clone)]
pub struct Herald {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Herald {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Herald")
            .field("handlers", &self.inner.handlers.len())
            .finish_non_exhaustive()
    }
}

/// One handler as the runtime runs it.
pub(crate) struct HandlerRuntime {
    pub(crate) desc: &'static HandlerDescriptor,
    pub(crate) pool: Arc<Pool>,
    pub(crate) counters: HandlerCounters,
    pub(crate) rate: Option<DefaultDirectRateLimiter>,
    pub(crate) dedupe: Option<DedupeWindow>,
    pub(crate) lanes: Option<KeyLanes>,
    /// Set for a route: its attempt publishes to a sink instead of calling `desc.call`.
    pub(crate) forward: Option<Forward>,
    /// Set when the handler has a circuit breaker.
    pub(crate) breaker: Option<Arc<Breaker>>,
    /// The SLAs (indices into `Inner::slas`) its success fulfils.
    pub(crate) slas: Box<[usize]>,
}

impl fmt::Debug for HandlerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerRuntime")
            .field("name", &self.desc.name)
            .field("pool", &self.pool.name)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) handlers: Vec<Arc<HandlerRuntime>>,
    /// Looked up by wire name on every publish; Fx hashing costs a fraction of SipHash here, and the
    /// keys are the registry's own names, not attacker-chosen input.
    pub(crate) routes: FxHashMap<&'static str, Vec<Arc<HandlerRuntime>>>,
    pub(crate) pools: Vec<Arc<Pool>>,
    pub(crate) states: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub(crate) dead_letters: Arc<dyn DeadLetterStore>,
    pub(crate) messages: HashMap<&'static str, &'static MessageDescriptor>,
    pub(crate) table: RoutingTable,
    pub(crate) accepting: AtomicBool,
    /// Dead-letter writes started where the caller cannot wait (`try_publish`); shutdown awaits them.
    pub(crate) background: TaskTracker,
    /// Jobs of delayed messages waiting for their time.
    pub(crate) delays: Arc<Delays>,
    /// The SLAs, their store and sweeper; `None` without SLAs.
    pub(crate) slas: Option<Arc<Slas>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: close the queues so the workers end, and stop the delay timer
        // (no job waits there: each would hold a handle).
        for pool in &self.pools {
            pool.queue.close();
        }
        self.delays.stop();
        if let Some(slas) = &self.slas {
            slas.stop();
        }
    }
}

impl Inner {
    /// Stores a dead letter, trying the store again a few times (a database that restarts, a
    /// dropped connection). If every try fails, the entry is logged in full at error level and the
    /// error is returned, so that a caller that still holds the message (a relay's row) keeps it.
    pub(crate) async fn store_dead_letter(
        &self,
        entry: DeadLetter,
    ) -> Result<DeadLetterId, DeadLetterError> {
        store(self.dead_letters.clone(), entry).await
    }

    /// As [`store_dead_letter`](Self::store_dead_letter), from code that cannot wait.
    pub(crate) fn store_dead_letter_later(&self, entry: DeadLetter) {
        let store_to = self.dead_letters.clone();
        self.background.spawn(async move {
            // Logged in full inside `store` when every try fails: nothing else to do here.
            let _ = store(store_to, entry).await;
        });
    }
}

/// Delays between tries of a dead-letter write: about 1.5 s in all before it is given up.
const DEAD_LETTER_RETRIES: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(50),
    std::time::Duration::from_millis(250),
    std::time::Duration::from_millis(1_200),
];

async fn store(
    store: Arc<dyn DeadLetterStore>,
    entry: DeadLetter,
) -> Result<DeadLetterId, DeadLetterError> {
    let mut retries = DEAD_LETTER_RETRIES.iter();
    loop {
        let error = match store.put(entry.clone()).await {
            Ok(id) => return Ok(id),
            Err(error) => error,
        };
        match retries.next() {
            Some(delay) => {
                tracing::warn!(error = %error, retry_in = ?delay, handler = %entry.handler, message_id = %entry.envelope.id, "could not store a dead letter; trying again");
                tokio::time::sleep(*delay).await;
            }
            None => {
                tracing::error!(
                    error = %error,
                    dead_letter = %serde_json::to_string(&entry).unwrap_or_default(),
                    "could not store a dead letter; it is logged here in full"
                );
                return Err(error);
            }
        }
    }
}

impl Herald {
    /// Starts configuring a runtime.
    pub fn builder() -> crate::engine::builder::HeraldBuilder {
        crate::engine::builder::HeraldBuilder::new()
    }

    pub(crate) fn handlers_of(&self, name: &str) -> Vec<Arc<HandlerRuntime>> {
        self.inner.routes.get(name).cloned().unwrap_or_default()
    }

    /// A state value registered with `.state(..)`.
    pub fn state<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.inner
            .states
            .get(&TypeId::of::<T>())
            .and_then(|value| value.downcast_ref::<T>())
            .cloned()
    }

    /// The routing table: message → handlers, pool and options. Print it with `{}`.
    pub fn routes(&self) -> &RoutingTable {
        &self.inner.table
    }

    /// The ledger, per handler and in total, with the dead-letter store's eviction count.
    pub fn ledger(&self) -> LedgerSnapshot {
        let mut ledger = LedgerSnapshot::from_handlers(
            self.inner
                .handlers
                .iter()
                .map(|h| (h.desc.name, &h.counters)),
        );
        ledger.dead_letters_evicted = self.inner.dead_letters.evicted();
        if let Some(slas) = &self.inner.slas {
            ledger.slas = slas.snapshot();
        }
        ledger
    }

    /// Where the circuit breaker of `handler` stands, or `None` when the handler has no breaker
    /// (or no handler has that name).
    pub fn circuit_breaker(&self, handler: &str) -> Option<BreakerState> {
        self.inner
            .handlers
            .iter()
            .find(|h| h.desc.name == handler)
            .and_then(|h| h.breaker.as_ref())
            .map(|breaker| breaker.state())
    }

    /// Depth and bounds of every pool.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        self.inner.pools.iter().map(|pool| pool.stats()).collect()
    }

    /// The dead-letter store.
    pub fn dead_letters(&self) -> &Arc<dyn DeadLetterStore> {
        &self.inner.dead_letters
    }
}
