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
