//! `Herald::builder()`: pools, state and stores; `build()` checks the whole registry at once.

use crate::ports::dead_letters::DeadLetterStore;

use crate::contract::handler::HandlerDescriptor;
use crate::engine::breaker::Breaker;
use crate::engine::counters::HandlerCounters;
use crate::engine::dedupe::DedupeWindow;
use crate::engine::delay::Delays;
use crate::engine::lanes::KeyLanes;
use crate::engine::memory_dead_letters::InMemoryDeadLetters;
use crate::engine::memory_slas::InMemorySlaStore;
use crate::engine::observe::HandlerSeries;
use crate::engine::observe::{AttemptObserver, Hooks, Observers};
use crate::engine::pool::{Pool, PoolConfig};
use crate::engine::registry::{self, RoutingTable};
use crate::engine::route::{Forward, RouteSpec};
use crate::engine::runtime::{HandlerRuntime, Herald, Inner};
use crate::engine::sla::{Slas, DEFAULT_SLA_SWEEP_INTERVAL};
use crate::model::message::{Message, MessageDescriptor, MessageKind};
use crate::model::options::{CircuitBreaker, Rate};
use crate::model::sla::{Expected, Sla, SlaBreached};
use crate::ports::sla::SlaStore;
use governor::{Quota, RateLimiter};
use rustc_hash::FxHashMap;
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio_util::task::TaskTracker;

/// The name of the pool handlers run on when they name none.
pub const DEFAULT_POOL: &str = "default";

/// Configures a [`Herald`]. Every problem is reported at once by [`build`](Self::build).
#[must_use]
pub struct HeraldBuilder {
    default_pool: PoolConfig,
    pools: Vec<(String, PoolConfig)>,
    states: Vec<(TypeId, &'static str, Arc<dyn Any + Send + Sync>)>,
    dead_letters: Option<Arc<dyn DeadLetterStore>>,
    prefix: Option<String>,
    dedupe_window: usize,
    rates: Vec<(String, Rate)>,
    breakers: Vec<(String, CircuitBreaker)>,
    observers: Vec<(&'static str, Box<dyn AttemptObserver>)>,
    metrics: bool,
    routes: Vec<RouteSpec>,
    slas: Vec<Sla>,
    sla_store: Option<Arc<dyn SlaStore>>,
    sla_sweep_interval: std::time::Duration,
}

impl fmt::Debug for HeraldBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeraldBuilder")
            .field("default_pool", &self.default_pool)
            .field("pools", &self.pools)
            .field(
                "states",
                &self.states.iter().map(|s| s.1).collect::<Vec<_>>(),
            )
            .field("prefix", &self.prefix)
            .field(
                "observers",
                &self.observers.iter().map(|o| o.0).collect::<Vec<_>>(),
            )
            .field("metrics", &self.metrics)
            .field("routes", &self.routes)
            .field("slas", &self.slas)
            .field("sla_store", &self.sla_store)
            .finish_non_exhaustive()
    }
}

impl HeraldBuilder {
    pub(crate) fn new() -> Self {
        HeraldBuilder {
            default_pool: PoolConfig::new(),
            pools: Vec::new(),
            states: Vec::new(),
            dead_letters: None,
            prefix: None,
            dedupe_window: 100_000,
            rates: Vec::new(),
            breakers: Vec::new(),
            observers: Vec::new(),
            metrics: true,
            routes: Vec::new(),
            slas: Vec::new(),
            sla_store: None,
            sla_sweep_interval: DEFAULT_SLA_SWEEP_INTERVAL,
        }
    }

    /// Adds a finished route (see [`RouteBuilder::to`](crate::engine::route::RouteBuilder::to)).
    pub(crate) fn with_route(mut self, route: RouteSpec) -> Self {
        self.routes.push(route);
        self
    }

    /// Adds a named pool; handlers choose it with `#[async_handler(pool = "name")]`.
    pub fn pool(mut self, name: impl Into<String>, config: PoolConfig) -> Self {
        self.pools.push((name.into(), config));
        self
    }

    /// Configures the pool of handlers that name none (default: 64 concurrent, queue 1,024, `Wait`).
    pub fn default_pool(mut self, config: PoolConfig) -> Self {
        self.default_pool = config;
        self
    }

    /// Registers state that handlers extract with `State<T>`. One value per type.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.retain(|(id, _, _)| *id != TypeId::of::<T>());
        self.states.push((
            TypeId::of::<T>(),
            std::any::type_name::<T>(),
            Arc::new(value),
        ));
        self
    }

    /// Where dead letters go (default: [`InMemoryDeadLetters`] with 10,000 entries).
    pub fn dead_letters(mut self, store: impl DeadLetterStore) -> Self {
        self.dead_letters = Some(Arc::new(store));
        self
    }

    /// As [`dead_letters`](Self::dead_letters), for a store already shared.
    pub fn dead_letter_store(mut self, store: Arc<dyn DeadLetterStore>) -> Self {
        self.dead_letters = Some(store);
        self
    }

    /// Runs only the handlers (and checks only the messages) declared in module `prefix` or below,
    /// e.g. `module_path!()`. Use it to run a subset of handlers in one process, or in tests.
    pub fn handlers_under(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// How many completed ids each `dedupe` handler remembers (default 100,000).
    pub fn dedupe_window(mut self, ids: usize) -> Self {
        self.dedupe_window = ids;
        self
    }

    /// Sets or replaces the rate limit of one handler (by name), e.g. from configuration, overriding
    /// its `rate = "..."` option.
    pub fn rate(mut self, handler: impl Into<String>, rate: Rate) -> Self {
        self.rates.push((handler.into(), rate));
        self
    }

    /// Sets or replaces the circuit breaker of one handler (by name; a route's name too), e.g. from
    /// configuration, overriding its `circuit_breaker(..)` option. See [`CircuitBreaker`].
    pub fn circuit_breaker(mut self, handler: impl Into<String>, breaker: CircuitBreaker) -> Self {
        self.breakers.push((handler.into(), breaker));
        self
    }

    /// Adds an observer of every handler job: attempts with their outcome and duration, each job's
    /// final status, and every movement of the ledger (see [`crate::observe`]). Several observers
    /// may be added; they are called in the order added. Pass an `Arc` of the observer to keep a
    /// handle to it.
    ///
    /// An observer that panics is caught and logged at error level, and the job goes on.
    pub fn observe(mut self, observer: impl AttemptObserver) -> Self {
        fn name_of<O>(_: &O) -> &'static str {
            std::any::type_name::<O>()
        }
        self.observers
            .push((name_of(&observer), Box::new(observer)));
        self
    }

    /// Whether the ledger is mirrored to the [`metrics`](https://docs.rs/metrics) facade (default:
    /// on): `herald_messages_total{handler,outcome}`, `herald_failed_attempts_total{handler}`,
    /// `herald_retries_total{handler}` and the gauges `herald_in_flight{handler}` and
    /// `herald_queued{handler}`, resolved against the recorder installed when `build()` runs. Turn it
    /// off when another observer exports the figures, or to save its few instructions per job.
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }

    /// Registers a deadline SLA: after message A, expect message B (or a handler's completion)
    /// within a time, correlated by a key (see [`Sla`] and `docs/SLAS.md`). Its expectations live
    /// in the [`sla_store`](Self::sla_store) (in memory by default), and a sweeper emits an
    /// [`SlaBreached`] event for each one that misses its deadline. SLAs are listed by
    /// [`Herald::routes`].
    pub fn sla(mut self, sla: Sla) -> Self {
        self.slas.push(sla);
        self
    }

    /// Where SLA expectations live. Give the outbox (`.sla_store(outbox.clone())`, any
    /// `SqliteOutbox`, `PgOutbox` or `MySqlOutbox`) to keep them durable: an A written with that
    /// outbox (or a clone) opens its expectation in the same transaction, a B fulfils them in its
    /// transaction, and a breach is marked and its `SlaBreached` written into the outbox in one
    /// transaction (delivered by the outbox's relay). Several processes may share it: their
    /// sweepers compete, and each breach is emitted once. An outbox follows the SLAs of the last
    /// runtime built with it. Default: [`InMemorySlaStore`], whose expectations do not survive a
    /// restart.
    pub fn sla_store(mut self, store: impl SlaStore) -> Self {
        self.sla_store = Some(Arc::new(store));
        self
    }

    /// How often the SLA sweeper looks for due expectations (default 1 s): a breach is emitted
    /// within about this long after its due time.
    pub fn sla_sweep_interval(mut self, interval: std::time::Duration) -> Self {
        self.sla_sweep_interval = interval;
        self
    }

    /// Checks the registry and the configuration, then starts the pools.
    ///
    /// # Errors
    /// A [`BuildError`] listing every problem: a command with no handler or with two, duplicate
    /// handler names, a handler naming an unknown pool, state that was never registered, a pool with
    /// zero concurrency or queue, an SLA without a deadline or whose handler does not exist, no
    /// tokio runtime.
    pub fn build(mut self) -> Result<Herald, BuildError> {
        let (mut handlers, mut messages) = registry::collect(self.prefix.as_deref());
        let mut problems = Vec::new();
        let mut forwards: HashMap<&'static str, Forward> = HashMap::new();
        for route in std::mem::take(&mut self.routes) {
            let missing = route.missing_capabilities();
            if !missing.is_empty() {
                problems.push(BuildProblem::general(format!(
                    "route `{}` ({}:{}) requires {} of its sink `{}`, which does not declare it: choose a sink that has it, or drop the requirement",
                    route.handler_name(),
                    route.location.file(),
                    route.location.line(),
                    missing.join(" and "),
                    route.sink.destination()
                )));
            }
            let (descriptor, forward) = route.into_handler();
            handlers.push(descriptor);
            forwards.insert(descriptor.name, forward);
        }
        // A handler's message may be declared outside `handlers_under` (a shared `messages`
        // module); stored and received copies of it must still decode.
        for handler in &handlers {
            if !messages.iter().any(|m| m.name == handler.message) {
                messages.extend(registry::message_named(handler.message));
            }
        }
        // With SLAs, their breach event is in the routing table, handled or not.
        if !self.slas.is_empty() && !messages.iter().any(|m| m.name == SlaBreached::NAME) {
            messages.extend(registry::message_named(SlaBreached::NAME));
        }
        problems.extend(self.check(&handlers, &messages));
        problems.extend(self.check_slas(&handlers));
        let runtime = tokio::runtime::Handle::try_current();
        if runtime.is_err() {
            problems.push(BuildProblem::general(
                "`build()` must run inside a tokio runtime: call it from `#[tokio::main]` or inside `Runtime::block_on`",
            ));
        }
        let (Ok(runtime), true) = (runtime, problems.is_empty()) else {
            return Err(BuildError { problems });
        };

        let mut pools: BTreeMap<String, Arc<Pool>> = BTreeMap::new();
        pools.insert(
            DEFAULT_POOL.to_owned(),
            Arc::new(Pool::new(
                DEFAULT_POOL.to_owned(),
                self.default_pool,
                runtime.clone(),
            )),
        );
        for (name, config) in &self.pools {
            pools.insert(
                name.clone(),
                Arc::new(Pool::new(name.clone(), *config, runtime.clone())),
            );
        }
        let window = NonZeroUsize::new(self.dedupe_window).unwrap_or(NonZeroUsize::MIN);
        let observers = Observers::new(std::mem::take(&mut self.observers));
        let slas = (!self.slas.is_empty()).then(|| {
            let store = self.sla_store.take().unwrap_or_else(|| {
                tracing::info!("SLA expectations are kept in memory and do not survive a restart: give the builder `.sla_store(outbox.clone())` to keep them in the outbox's database");
                Arc::new(InMemorySlaStore::default())
            });
            Arc::new(Slas::new(
                std::mem::take(&mut self.slas),
                store,
                observers.clone(),
                self.metrics,
                self.sla_sweep_interval,
            ))
        });
        let mut runtimes: Vec<Arc<HandlerRuntime>> = handlers
            .iter()
            .map(|desc| {
                let pool = pools[desc.pool.unwrap_or(DEFAULT_POOL)].clone();
                let breaker = self.breaker_of(desc);
                Arc::new(HandlerRuntime {
                    desc,
                    pool,
                    counters: HandlerCounters::new(Hooks::new(
                        desc.name,
                        self.metrics,
                        HandlerSeries {
                            breaker: breaker.is_some(),
                            start_within: desc.options.start_within.is_some(),
                        },
                        observers.clone(),
                    )),
                    breaker: breaker.map(|config| Arc::new(Breaker::new(desc.name, config))),
                    rate: self.rate_of(desc).and_then(|rate| {
                        let quota = Quota::with_period(rate.per / rate.count.max(1))?;
                        // A burst of 1% of the rate (at least 1) keeps any one window within 1% of the
                        // cap, while letting high rates through tokio's millisecond timer.
                        let burst = NonZeroU32::new(rate.count / 100).unwrap_or(NonZeroU32::MIN);
                        Some(RateLimiter::direct(quota.allow_burst(burst)))
                    }),
                    dedupe: desc.options.dedupe.then(|| DedupeWindow::new(window)),
                    lanes: desc.options.ordered.then(KeyLanes::default),
                    forward: forwards.remove(desc.name),
                    slas: slas
                        .as_ref()
                        .map(|slas| slas.fulfilled_by(desc.name))
                        .unwrap_or_default(),
                })
            })
            .collect();
        runtimes.sort_by_key(|h| h.desc.name);
        let mut routes: FxHashMap<&'static str, Vec<Arc<HandlerRuntime>>> = FxHashMap::default();
        for handler in &runtimes {
            routes
                .entry(handler.desc.message)
                .or_default()
                .push(handler.clone());
        }
        let mut table = RoutingTable::new(&handlers, &messages);
        for handler in &runtimes {
            if let Some(forward) = &handler.forward {
                table.set_destination(handler.desc.name, forward.destination());
            }
            table.set_breaker(handler.desc.name, self.breaker_of(handler.desc));
        }
        if let Some(slas) = &slas {
            table.set_slas(slas.list());
        }
        let inner = Inner {
            table,
            handlers: runtimes,
            routes,
            pools: pools.into_values().collect(),
            states: self
                .states
                .into_iter()
                .map(|(id, _, value)| (id, value))
                .collect(),
            dead_letters: self
                .dead_letters
                .unwrap_or_else(|| Arc::new(InMemoryDeadLetters::default())),
            // Every runtime decodes a breach event, SLAs or not: a relay sharing an outbox with a
            // process that sweeps may claim its row, and must not take it for a malformed one.
            messages: messages
                .iter()
                .copied()
                .chain(registry::message_named(SlaBreached::NAME))
                .map(|m| (m.name, m))
                .collect(),
            accepting: AtomicBool::new(true),
            background: TaskTracker::new(),
            delays: Arc::new(Delays::default()),
            slas,
        };
        runtime.spawn(inner.delays.clone().run());
        let inner = Arc::new(inner);
        if let Some(slas) = &inner.slas {
            slas.start(&inner);
        }
        Ok(Herald { inner })
    }

    /// The SLAs' problems: their own (name, deadline), two with one name, an expected handler
    /// that does not exist or handles another message, a sweep interval of zero.
    fn check_slas(&self, handlers: &[&'static HandlerDescriptor]) -> Vec<BuildProblem> {
        let mut problems: Vec<BuildProblem> = Vec::new();
        if self.slas.is_empty() {
            return problems;
        }
        let mut names: BTreeMap<&str, Vec<&Sla>> = BTreeMap::new();
        for sla in &self.slas {
            names.entry(sla.name()).or_default().push(sla);
            problems.extend(sla.problems().into_iter().map(BuildProblem::general));
            if let Expected::Completion {
                handler,
                message,
                rust_type,
                ..
            } = sla.expected()
            {
                let at = format!("{}:{}", sla.location().file(), sla.location().line());
                match handlers.iter().find(|h| h.name == handler) {
                    None => problems.push(BuildProblem::general(format!(
                        "SLA `{}` ({at}) expects handler `{handler}`, which is not registered: use a handler name from the routing table (`herald.routes()`)",
                        sla.name()
                    ))),
                    Some(found) if found.message != *message => {
                        problems.push(BuildProblem::general(format!(
                            "SLA `{}` ({at}) expects handler `{handler}` to complete `{message}` (`{rust_type}`), but it handles `{}` (`{}`): write `.expect_handler::<{}>(\"{handler}\")`",
                            sla.name(),
                            found.message,
                            found.message_type,
                            found.message_type
                        )))
                    }
                    Some(_) => {}
                }
            }
        }
        for (name, same) in names {
            if same.len() > 1 {
                let places: Vec<String> = same
                    .iter()
                    .map(|sla| format!("{}:{}", sla.location().file(), sla.location().line()))
                    .collect();
                problems.push(BuildProblem::general(format!(
                    "SLA name `{name}` is registered {} times ({}): give each SLA its own name",
                    same.len(),
                    places.join(", ")
                )));
            }
        }
        if self.sla_sweep_interval.is_zero() {
            problems.push(BuildProblem::general(
                "`.sla_sweep_interval(Duration::ZERO)` would sweep without pause: use an interval above zero, e.g. Duration::from_secs(1)",
            ));
        }
        problems
    }

    fn rate_of(&self, handler: &HandlerDescriptor) -> Option<Rate> {
        let configured = self
            .rates
            .iter()
            .rev()
            .find(|(name, _)| name == handler.name);
        configured.map(|(_, rate)| *rate).or(handler.options.rate)
    }

    fn breaker_of(&self, handler: &HandlerDescriptor) -> Option<CircuitBreaker> {
        let configured = self
            .breakers
            .iter()
            .rev()
            .find(|(name, _)| name == handler.name);
        configured
            .map(|(_, breaker)| *breaker)
            .or(handler.options.circuit_breaker)
    }

    fn check(
        &self,
        handlers: &[&'static HandlerDescriptor],
        messages: &[&'static MessageDescriptor],
    ) -> Vec<BuildProblem> {
        let mut problems = Vec::new();
        problems.extend(
            self.default_pool
                .problems(DEFAULT_POOL)
                .into_iter()
                .map(BuildProblem::general),
        );
        let mut pool_names: HashMap<&str, usize> = HashMap::new();
        for (name, config) in &self.pools {
            *pool_names.entry(name).or_default() += 1;
            problems.extend(config.problems(name).into_iter().map(BuildProblem::general));
        }
        for (name, count) in &pool_names {
            if *count > 1 {
                problems.push(BuildProblem::general(format!(
                    "pool `{name}` is configured {count} times: keep one `.pool(\"{name}\", ..)`"
                )));
            }
            if *name == DEFAULT_POOL {
                problems.push(BuildProblem::general(format!(
                    "`.pool(\"{DEFAULT_POOL}\", ..)` is reserved: configure the default pool with `.default_pool(..)`"
                )));
            }
        }
        for (name, rate) in &self.rates {
            if !handlers.iter().any(|h| h.name == name) {
                problems.push(BuildProblem::general(format!(
                    "`.rate(\"{name}\", ..)` names no handler: use a handler name from the routing table"
                )));
            }
            if rate.count == 0 || rate.per.is_zero() {
                problems.push(BuildProblem::general(format!(
                    "`.rate(\"{name}\", ..)` allows nothing: use a count and a period above zero, e.g. Rate {{ count: 180, per: Duration::from_secs(1) }}"
                )));
            }
        }
        for (name, _) in &self.breakers {
            if !handlers.iter().any(|h| h.name == name) {
                problems.push(BuildProblem::general(format!(
                    "`.circuit_breaker(\"{name}\", ..)` names no handler: use a handler name from the routing table"
                )));
            }
        }
        for handler in handlers {
            if let Some(problem) = self
                .breaker_of(handler)
                .and_then(|breaker| breaker.problem(handler.name))
            {
                problems.push(BuildProblem::handler(handler, problem));
            }
        }
        if self.dedupe_window == 0 {
            problems.push(BuildProblem::general(
                "`.dedupe_window(0)` remembers nothing: use at least 1",
            ));
        }

        let mut by_message_name: BTreeMap<&str, Vec<&MessageDescriptor>> = BTreeMap::new();
        for message in messages {
            by_message_name
                .entry(message.name)
                .or_default()
                .push(message);
        }
        for (name, same) in &by_message_name {
            if same.len() > 1 {
                let places: Vec<_> = same
                    .iter()
                    .map(|m| format!("`{}` ({}:{})", m.rust_type, m.file, m.line))
                    .collect();
                problems.push(BuildProblem::general(format!(
                    "message name `{name}` is used by {}: give each type a unique `name = \"...\"`",
                    places.join(" and ")
                )));
            }
        }

        let mut by_handler_name: BTreeMap<&str, Vec<&HandlerDescriptor>> = BTreeMap::new();
        for handler in handlers {
            by_handler_name
                .entry(handler.name)
                .or_default()
                .push(handler);
        }
        for (name, same) in &by_handler_name {
            if same.len() > 1 {
                let places: Vec<_> = same.iter().map(|h| h.location()).collect();
                problems.push(BuildProblem::handler(
                    same[0],
                    format!(
                        "handler name `{name}` is used by {} handlers ({}): give each a unique `#[async_handler(name = \"...\")]`",
                        same.len(),
                        places.join(", ")
                    ),
                ));
            }
        }

        for handler in handlers {
            let pool = handler.pool.unwrap_or(DEFAULT_POOL);
            if pool != DEFAULT_POOL && !pool_names.contains_key(pool) {
                problems.push(BuildProblem::handler(
                    handler,
                    format!(
                        "handler `{}` ({}) runs on pool `{pool}`, which is not configured: add `.pool(\"{pool}\", PoolConfig::new())` to the builder, or fix the pool name",
                        handler.name,
                        handler.location()
                    ),
                ));
            }
            for requirement in (handler.requirements)() {
                if !self
                    .states
                    .iter()
                    .any(|(id, _, _)| *id == requirement.type_id)
                {
                    problems.push(BuildProblem::handler(
                        handler,
                        format!(
                            "handler `{}` ({}) takes `State<{}>`, but no such state is registered: add `.state(value)` to the builder",
                            handler.name,
                            handler.location(),
                            requirement.type_name
                        ),
                    ));
                }
            }
        }

        for message in messages.iter().filter(|m| m.kind == MessageKind::Command) {
            let owners: Vec<_> = handlers
                .iter()
                .filter(|h| h.message == message.name)
                .collect();
            match owners.len() {
                0 => problems.push(BuildProblem::general(format!(
                    "command `{}` (`{}`, {}:{}) has no handler: add an `#[async_handler]` whose first argument is `{}`",
                    message.name, message.rust_type, message.file, message.line, message.rust_type
                ))),
                1 => {}
                _ => {
                    let places: Vec<_> = owners.iter().map(|h| format!("`{}` ({})", h.name, h.location())).collect();
                    problems.push(BuildProblem::handler(
                        owners[0],
                        format!(
                            "command `{}` has {} handlers ({}), but a command has exactly one owner: remove all but one, or make it an event",
                            message.name,
                            owners.len(),
                            places.join(", ")
                        ),
                    ));
                }
            }
        }
        problems
    }
}

/// One problem found by `build()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildProblem {
    /// The handler concerned, if any.
    pub handler: Option<&'static str>,
    /// `file:line` of that handler.
    pub location: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl BuildProblem {
    fn general(message: impl Into<String>) -> Self {
        BuildProblem {
            handler: None,
            location: None,
            message: message.into(),
        }
    }

    fn handler(handler: &HandlerDescriptor, message: String) -> Self {
        BuildProblem {
            handler: Some(handler.name),
            location: Some(handler.location()),
            message,
        }
    }
}

impl fmt::Display for BuildProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every problem `build()` found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct BuildError {
    /// The problems, in the order found.
    pub problems: Vec<BuildProblem>,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Herald cannot start: {} problem(s)", self.problems.len())?;
        for (number, problem) in self.problems.iter().enumerate() {
            writeln!(f, "  {}. {problem}", number + 1)?;
        }
        Ok(())
    }
}
