//! The registry: handlers and messages collected at link time, checked at start, printable as a table.

use crate::contract::handler::HandlerDescriptor;
use crate::model::message::{MessageDescriptor, MessageKind};
use crate::model::options::CircuitBreaker;
use crate::model::sla::Sla;
use std::collections::BTreeMap;
use std::fmt;

/// Every handler and message registered with `inventory` whose module starts with `prefix`.
pub(crate) fn collect(
    prefix: Option<&str>,
) -> (
    Vec<&'static HandlerDescriptor>,
    Vec<&'static MessageDescriptor>,
) {
    let selected =
        |module: &str| prefix.is_none_or(|p| module == p || module.starts_with(&format!("{p}::")));
    let handlers = inventory::iter::<HandlerDescriptor>
        .into_iter()
        .filter(|h| selected(h.module))
        .collect();
    let messages = inventory::iter::<MessageDescriptor>
        .into_iter()
        .filter(|m| selected(m.module))
        .collect();
    (handlers, messages)
}

/// The registered message named `name`, wherever it is declared.
pub(crate) fn message_named(name: &str) -> Option<&'static MessageDescriptor> {
    inventory::iter::<MessageDescriptor>
        .into_iter()
        .find(|m| m.name == name)
}

/// The routing table: message → handlers, with pool and options, and the deadline SLAs.
/// `Display` prints it for people.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    routes: BTreeMap<&'static str, Route>,
    slas: Vec<Sla>,
}

#[derive(Debug, Clone)]
struct Route {
    kind: MessageKind,
    handlers: Vec<RouteEntry>,
}

#[derive(Debug, Clone)]
struct RouteEntry {
    handler: &'static str,
    pool: String,
    options: String,
    location: String,
    /// A route's sink (`MessageSink::destination`); `None` for a handler.
    destination: Option<String>,
    /// The circuit breaker in force (the option, or the builder's override).
    breaker: Option<CircuitBreaker>,
}

impl RoutingTable {
    pub(crate) fn new(
        handlers: &[&'static HandlerDescriptor],
        messages: &[&'static MessageDescriptor],
    ) -> Self {
        let mut routes: BTreeMap<&'static str, Route> = BTreeMap::new();
        for message in messages {
            routes.entry(message.name).or_insert(Route {
                kind: message.kind,
                handlers: Vec::new(),
            });
        }
        for handler in handlers {
            let route = routes.entry(handler.message).or_insert(Route {
                kind: handler.kind,
                handlers: Vec::new(),
            });
            route.handlers.push(RouteEntry {
                handler: handler.name,
                pool: handler.pool.unwrap_or("default").to_owned(),
                options: describe_options(handler),
                location: handler.location(),
                destination: None,
                breaker: handler.options.circuit_breaker,
            });
        }
        RoutingTable {
            routes,
            slas: Vec::new(),
        }
    }

    /// Records the runtime's SLAs.
    pub(crate) fn set_slas(&mut self, slas: &[Sla]) {
        self.slas = slas.to_vec();
    }

    /// The deadline SLAs ([`HeraldBuilder::sla`](crate::HeraldBuilder::sla)).
    pub fn slas(&self) -> &[Sla] {
        &self.slas
    }

    /// The handlers of a message, by name.
    pub fn handlers_of(&self, message: &str) -> Vec<&'static str> {
        self.routes
            .get(message)
            .map(|r| r.handlers.iter().map(|h| h.handler).collect())
            .unwrap_or_default()
    }

    /// Records the destination of the route named `handler`.
    pub(crate) fn set_destination(&mut self, handler: &str, destination: String) {
        if let Some(entry) = self
            .routes
            .values_mut()
            .flat_map(|route| route.handlers.iter_mut())
            .find(|entry| entry.handler == handler)
        {
            entry.destination = Some(destination);
        }
    }

    /// Records the circuit breaker in force for `handler` (the builder may override the option).
    pub(crate) fn set_breaker(&mut self, handler: &str, breaker: Option<CircuitBreaker>) {
        if let Some(entry) = self
            .routes
            .values_mut()
            .flat_map(|route| route.handlers.iter_mut())
            .find(|entry| entry.handler == handler)
        {
            entry.breaker = breaker;
        }
    }

    /// Every handler (routes included) with the pool it runs on, by message name.
    pub fn handler_pools(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.routes
            .values()
            .flat_map(|route| route.handlers.iter())
            .map(|entry| (entry.handler, entry.pool.as_str()))
    }

    /// The destination a route forwards to (its sink's
    /// [`destination`](crate::ports::MessageSink::destination)), or `None` when `handler` is not a
    /// route.
    pub fn destination_of(&self, handler: &str) -> Option<&str> {
        self.routes
            .values()
            .flat_map(|route| route.handlers.iter())
            .find(|entry| entry.handler == handler)
            .and_then(|entry| entry.destination.as_deref())
    }

    /// Message names, sorted.
    pub fn messages(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.keys().copied()
    }
}

fn describe_options(handler: &HandlerDescriptor) -> String {
    let o = &handler.options;
    let mut parts = vec![format!(
        "retry={}x{}{}",
        o.retry.max_attempts,
        o.retry.backoff,
        if o.retry.jitter { "+jitter" } else { "" }
    )];
    if let Some(timeout) = o.timeout {
        parts.push(format!("timeout={timeout:?}"));
    }
    parts.push(format!("on_failure={}", o.on_failure));
    if let Some(rate) = o.rate {
        parts.push(format!("rate={rate}"));
    }
    if o.dedupe {
        parts.push("dedupe".into());
    }
    if o.ordered {
        parts.push("ordered".into());
    }
    if let Some(limit) = o.start_within {
        parts.push(format!("start_within={limit:?}"));
    }
    parts.join(" ")
}

impl fmt::Display for RoutingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, route) in &self.routes {
            writeln!(f, "{name} ({})", route.kind)?;
            if route.handlers.is_empty() {
                writeln!(f, "  (no handler)")?;
            }
            for entry in &route.handlers {
                let breaker = entry
                    .breaker
                    .map(|breaker| format!(" {breaker}"))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "  -> {} [pool={}] {}{breaker} ({})",
                    entry.handler, entry.pool, entry.options, entry.location
                )?;
            }
        }
        if !self.slas.is_empty() {
            writeln!(f, "SLAs")?;
            for sla in &self.slas {
                writeln!(f, "  {sla}")?;
            }
        }
        Ok(())
    }
}
