//! Layer 2: what handlers and the macros see. The invocation of one handler call and its context
//! trait, the extractors (`State<T>`, `Meta`), and the handler descriptor the macros register. It
//! imports only `model`: the engine provides the context, and its own extractors (`Bus`) live with it.

pub(crate) mod extract;
pub(crate) mod handler;
pub(crate) mod invocation;
