//! Layer 3: the engine. The builder and registry, the publish path, pools and key lanes, the worker
//! and its attempt pipeline with observers, dedupe, circuit breakers, delayed delivery, deadline
//! SLAs and `start_within`, the ledger's counters, handles, the bus, shutdown,
//! and one public ingress ([`Herald::ingest`](crate::Herald::ingest)) through which anything outside
//! the engine (a relay, a broker consumer, re-drive) delivers a stored message. It imports `model`,
//! `contract` and `ports`, never `durable`.

pub(crate) mod breaker;
pub(crate) mod builder;
pub(crate) mod bus;
pub(crate) mod counters;
pub(crate) mod dedupe;
pub(crate) mod delay;
pub(crate) mod handles;
pub(crate) mod ingress;
pub(crate) mod lanes;
pub(crate) mod memory_dead_letters;
pub(crate) mod memory_slas;
pub mod observe;
pub(crate) mod pool;
pub(crate) mod publish;
pub(crate) mod registry;
pub(crate) mod route;
pub(crate) mod runtime;
pub(crate) mod shutdown;
pub(crate) mod sla;
pub(crate) mod start_within;
pub(crate) mod worker;
