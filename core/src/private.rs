//! Items the macro-generated code names through `::herald::__private`. Not public API.

pub use crate::contract::extract::{FromInvocation, Requirement};
pub use crate::contract::handler::{AnyReply, HandlerDescriptor, IntoOutcome};
pub use crate::contract::invocation::Invocation;
pub use crate::model::error::HandlerError;
pub use crate::model::message::{Command, Event, Message, MessageDescriptor, MessageKind, Payload};
pub use crate::model::options::{
    Backoff, CircuitBreaker, HandlerOptions, OnFailure, Rate, RetryPolicy,
};
pub use futures_util::future::BoxFuture;
pub use inventory;
pub use std::time::Duration;

/// What a generated call returns.
pub type CallResult = Result<AnyReply, HandlerError>;
