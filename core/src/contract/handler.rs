//! What the macros register for a handler: its descriptor, its erased call, and the conversion of
//! its return value.

use crate::contract::extract::Requirement;
use crate::contract::invocation::Invocation;
use crate::model::error::HandlerError;
use crate::model::message::MessageKind;
use crate::model::options::HandlerOptions;
use futures_util::future::BoxFuture;
use std::any::Any;

/// The erased reply of one handler call: `()` for events, the command's reply otherwise.
pub type AnyReply = Box<dyn Any + Send>;

/// The erased call function the macro generates for a handler.
pub type HandlerFn = fn(Invocation) -> BoxFuture<'static, Result<AnyReply, HandlerError>>;

/// Link-time record of one `#[async_handler]`. Collected with `inventory`; the user never builds one.
#[derive(Debug)]
pub struct HandlerDescriptor {
    /// Unique handler name (default: module path and function name).
    pub name: &'static str,
    /// Wire name of the message it handles.
    pub message: &'static str,
    /// The message's Rust type as written.
    pub message_type: &'static str,
    /// Event or command.
    pub kind: MessageKind,
    /// The pool it runs on; `None` is the default pool.
    pub pool: Option<&'static str>,
    /// Failure handling, rate, dedupe and ordering.
    pub options: HandlerOptions,
    /// `module_path!()` where the handler is written.
    pub module: &'static str,
    /// Source file of the handler.
    pub file: &'static str,
    /// Source line of the handler.
    pub line: u32,
    /// The state types its extractors need (checked at `build()`).
    pub requirements: fn() -> Vec<Requirement>,
    /// Runs the handler once.
    pub call: HandlerFn,
}

inventory::collect!(HandlerDescriptor);

impl HandlerDescriptor {
    /// `file:line` of the handler, for error messages.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// Converts what a handler returns into its outcome. `Marker` tells plain values from `Result`s.
#[diagnostic::on_unimplemented(
    message = "this handler returns `{Self}`, but its message expects `{R}`",
    label = "wrong return type for this message",
    note = "an event handler returns `()` or `Result<(), E>`; a command handler returns the command's reply or `Result<Reply, E>`, where `E` is an error type (`std::error::Error`) or `herald::HandlerError`"
)]
pub trait IntoOutcome<R, Marker> {
    /// The reply, or the error the handler returned.
    fn into_outcome(self) -> Result<R, HandlerError>;
}

/// Marker: the handler returns the reply itself.
#[derive(Debug)]
pub enum Plain {}

/// Marker: the handler returns `Result<Reply, E>`.
#[derive(Debug)]
pub enum Fallible {}

impl<R> IntoOutcome<R, Plain> for R {
    fn into_outcome(self) -> Result<R, HandlerError> {
        Ok(self)
    }
}

impl<R, E: Into<HandlerError>> IntoOutcome<R, Fallible> for Result<R, E> {
    fn into_outcome(self) -> Result<R, HandlerError> {
        self.map_err(Into::into)
    }
}
