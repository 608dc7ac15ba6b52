//! Items the macro-generated code names through `::herald::__private`. Not public API.

pub use crate::error::HandlerError;
pub use crate::extract::{FromInvocation, Requirement};
pub use crate::handler::{
    AnyReply, Backoff, HandlerDescriptor, HandlerOptions, IntoOutcome, OnFailure, Rate, RetryPolicy,
};
pub use crate::invocation::Invocation;
pub use crate::message::{Command, Event, Message, MessageDescriptor, MessageKind, Payload};
pub use futures_util::future::BoxFuture;
pub use inventory;
pub use std::time::Duration;

/// What a generated call returns.
pub type CallResult = Result<AnyReply, HandlerError>;

/// Converts a handler's return value into the erased call result.
pub fn into_call_result<M, R, Marker>(value: R) -> CallResult
where
    M: Message,
    R: IntoOutcome<M::Reply, Marker>,
{
    value
        .into_outcome()
        .map(|reply| Box::new(reply) as AnyReply)
}

/// Compile-time check: the first argument is a message.
pub fn assert_message<M: Message>() {}

/// Compile-time check: the handler returns what its message expects.
pub fn assert_returns<M, R, Marker>()
where
    M: Message,
    R: IntoOutcome<M::Reply, Marker>,
{
}

/// Compile-time check: an argument after the message is an extractor.
pub fn assert_extractor<T: FromInvocation>() {}

/// Compile-time check: the handler's future can move between worker threads.
pub fn assert_send<F: HandlerFuture>(_future: F) {}

/// A handler's future: it must be `Send` because pools run it on any worker thread.
#[diagnostic::on_unimplemented(
    message = "the future returned by this handler is not `Send`",
    label = "this handler holds something that is not `Send` across an `.await`",
    note = "Herald runs handlers on a multi-threaded pool: do not hold `Rc`, `RefCell` borrows or `std::sync::MutexGuard` across `.await` (drop them before awaiting, or use `Arc` / `tokio::sync::Mutex`)"
)]
pub trait HandlerFuture: std::future::Future + Send {}

impl<F: std::future::Future + Send> HandlerFuture for F {}
