//! Procedural macros of [Herald](https://docs.rs/herald): `#[async_handler]`, `#[derive(Event)]` and
//! `#[derive(Command)]`.
//!
//! Use them through the `herald` crate, which re-exports them: the code they write names
//! `::herald::__private`. The entry points below are thin; parsing, validation and expansion live in
//! modules that work on `proc_macro2`, so that they are unit-tested and snapshot-tested
//! (`tests/expand/*.expanded.rs`, regenerated with `HERALD_BLESS=1 cargo test -p herald-macros`).
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
// A failing `unwrap` in a test is the test failing, with the value in the message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod attr;
mod ctxt;
mod duration;
mod handler;
mod message;
#[cfg(test)]
mod snapshots;

use proc_macro::TokenStream;

/// Registers an `async fn` as the handler of the message it takes as first argument.
///
/// The function is kept as written (call it directly in unit tests); the macro adds a registration
/// beside it, collected at link time when the `Herald` runtime is built.
///
/// ```ignore
/// use herald::{async_handler, Bus, Meta, State};
///
/// #[async_handler(pool = "billing", retry(max_attempts = 5), timeout = "5s")]
/// async fn charge(command: ChargeCard, State(gateway): State<Gateway>, meta: Meta) -> Result<Receipt, GatewayError> {
///     gateway.charge(command.card, command.amount, meta.id()).await
/// }
/// ```
///
/// # Arguments
///
/// The first argument is the message, by value: a type deriving [`Event`](derive@Event) or
/// [`Command`](derive@Command). The others are extractors, in any order: `State<T>` (state given to
/// `Herald::builder().state(..)`), `Meta` (id, attempt, headers) and `Bus` (to publish follow-ups).
/// Patterns are allowed: `State(db): State<Db>`.
///
/// An event handler returns `()` or `Result<(), E>`; a command handler returns the command's reply
/// or `Result<Reply, E>`.
///
/// # Options
///
/// Every option is optional and given at most once:
///
/// | option | meaning | default |
/// |---|---|---|
/// | `name = "billing.charge"` | unique handler name | `module::path::fn_name` |
/// | `pool = "billing"` | the pool it runs on | the default pool |
/// | `retry(max_attempts = 5, backoff = exponential(100ms, 2.0, 10s), jitter)` | attempts (the first included) and delays; each part optional; also `backoff = fixed(1s)` | 3 attempts, `exponential(100ms, 2.0, 10s)`, no jitter |
/// | `timeout = "5s"` | an attempt running longer fails | none |
/// | `on_failure = dead_letter` / `log` / `ignore` | after the last failed attempt | `dead_letter` |
/// | `rate = "180/s"` | at most this many attempts per second (`/ms`, `/m`, `/h`) | unlimited |
/// | `dedupe` | skip a message id this handler already completed | off |
/// | `ordered` | messages with the same key run one at a time, in order (the message needs `key = ..`) | off |
/// | `circuit_breaker(failures = 5, open_for = "30s")` | after `failures` failed attempts in a row, the handler's jobs wait `open_for` (no attempt spent), then one probe runs; each part optional | none (`circuit_breaker` alone: 5 failures, 30 s) |
/// | `start_within = "30s"` | a job whose first attempt starts later than this after the message's time (its queue delay) is logged at warn level and counted in `start_late`; it still runs | none |
///
/// Durations are a number and a unit: `ns`, `us`, `ms`, `s`, `m` or `h` (`100ms`, `1.5s`).
///
/// # What it writes
///
/// Beside the function, inside `const _: () = { … };`: a call function that builds the arguments from
/// the invocation, awaits the handler and erases its reply, the list of state types the extractors
/// need (checked by `build()`), and the registration. Paths are shortened here; the generated code
/// names `::herald::__private::…`. Its expressions are spanned to your types, so that a first
/// argument that is not a message, an argument that is not an extractor, a wrong return type or a
/// future that is not `Send` is reported once, at your code.
///
/// ```ignore
/// const _: () = {
///     fn __call(inv: Invocation) -> BoxFuture<'static, CallResult> {
///         Box::pin(async move {
///             let _: <ChargeCard as Message>::Reply;
///             let a0: ChargeCard = inv.message::<ChargeCard>()?;
///             let a1: State<Gateway> = <State<Gateway> as FromInvocation>::from_invocation(&inv)?;
///             let a2: Meta = <Meta as FromInvocation>::from_invocation(&inv)?;
///             let output: Result<Receipt, GatewayError> = charge(a0, a1, a2).await;
///             let reply: <ChargeCard as Message>::Reply =
///                 <Result<Receipt, GatewayError> as IntoOutcome<<ChargeCard as Message>::Reply, _>>::into_outcome(output)?;
///             Ok(Box::new(reply) as AnyReply)
///         })
///     }
///     fn __requirements() -> Vec<Requirement> {
///         [<State<Gateway> as FromInvocation>::requirement(), <Meta as FromInvocation>::requirement()]
///             .into_iter()
///             .flatten()
///             .collect()
///     }
///     const __DESCRIPTOR: HandlerDescriptor = HandlerDescriptor {
///         name: concat!(module_path!(), "::", "charge"),
///         message: <ChargeCard as Message>::NAME,
///         message_type: "ChargeCard",
///         kind: <ChargeCard as Message>::KIND,
///         pool: Some("billing"),
///         options: HandlerOptions {
///             retry: RetryPolicy { max_attempts: 5, ..RetryPolicy::DEFAULT },
///             timeout: Some(Duration::from_secs(5)),
///             ..HandlerOptions::DEFAULT
///         },
///         module: module_path!(),
///         file: file!(),
///         line: line!(),
///         requirements: __requirements,
///         call: __call,
///     };
///     inventory::submit!(__DESCRIPTOR);
/// };
/// ```
///
/// With `ordered`, it also asserts at compile time that the message has a key
/// (`const _: () = assert!(<M as Message>::HAS_KEY, "…")`), and reports it at `ordered` when not.
#[proc_macro_attribute]
pub fn async_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into()).into()
}

/// Makes a type an event: something happened, and any number of handlers react to it.
///
/// The type must also derive `Clone`, `Serialize` and `Deserialize`.
///
/// ```ignore
/// #[derive(Event, Clone, Debug, Serialize, Deserialize)]
/// #[event(name = "order.canceled", key = order_id)]
/// struct OrderCanceled {
///     order_id: u64,
///     reason: String,
/// }
/// ```
///
/// * `name = "..."`: the wire name, stable once messages are stored (default: the type's name).
/// * `key = field`: the ordering key, needed by `ordered` handlers; the field must implement `Display`.
///
/// # What it writes
///
/// ```ignore
/// const _: () = {
///     impl Message for OrderCanceled {
///         const NAME: &'static str = "order.canceled";
///         const KIND: MessageKind = MessageKind::Event;
///         type Reply = ();
///         const HAS_KEY: bool = true;
///         fn key(&self) -> Option<String> {
///             Some(ToString::to_string(&self.order_id))
///         }
///     }
///     impl Event for OrderCanceled {}
///     const __DESCRIPTOR: MessageDescriptor = MessageDescriptor {
///         name: "order.canceled",
///         kind: MessageKind::Event,
///         rust_type: "OrderCanceled",
///         module: module_path!(),
///         file: file!(),
///         line: line!(),
///         decode: Payload::decode::<OrderCanceled>,
///     };
///     inventory::submit!(__DESCRIPTOR);
/// };
/// ```
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    message::expand(message::Kind::Event, input.into()).into()
}

/// Makes a type a command: a request that exactly one handler owns, answered with a reply.
///
/// The type must also derive `Clone`, `Serialize` and `Deserialize`.
///
/// ```ignore
/// #[derive(Command, Clone, Debug, Serialize, Deserialize)]
/// #[command(name = "points.grant", reply = PointsGranted, key = user_id)]
/// struct GrantPoints {
///     user_id: u64,
///     points: u32,
/// }
/// ```
///
/// * `name = "..."`: the wire name (default: the type's name).
/// * `reply = Type`: what the handler returns (default: `()`); a handler may also return
///   `Result<Type, E>`.
/// * `key = field`: the ordering key, as for events.
///
/// It writes the same as [`Event`](derive@Event), with `MessageKind::Command`, `type Reply = Type`
/// and `impl Command`.
#[proc_macro_derive(Command, attributes(command))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    message::expand(message::Kind::Command, input.into()).into()
}
