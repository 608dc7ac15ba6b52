//! What `#[async_handler]` accepts: a free `async fn` whose first argument is the message, taken by
//! value, followed by extractors. Type-level rules (is it a message? an extractor? the right reply?)
//! are left to the compiler, through the checks in `expand.rs`.

use crate::attr::render;
use crate::ctxt::Ctxt;
use proc_macro2::{Ident, TokenStream};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, FnArg, ReturnType, Signature, Type, Visibility};

/// The annotated function, of which only the signature matters: the function is re-emitted as
/// written. The body is not parsed, so that a body that does not parse yet (while the user types)
/// does not hide the macro's own errors.
pub(crate) struct HandlerFn {
    pub(crate) sig: Signature,
}

impl Parse for HandlerFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        input.call(Attribute::parse_outer)?;
        input.parse::<Visibility>()?;
        let sig = input
            .parse()
            .map_err(|e| syn::Error::new(e.span(), "`#[async_handler]` goes on an `async fn`"))?;
        input.parse::<TokenStream>()?;
        Ok(HandlerFn { sig })
    }
}

/// A valid handler signature, reduced to what the expansion needs.
#[derive(Debug)]
pub(crate) struct Handler {
    pub(crate) ident: Ident,
    /// The first argument's type.
    pub(crate) message: Type,
    /// The types of the other arguments.
    pub(crate) extractors: Vec<Type>,
    /// The return type, `None` when not written (`()`).
    pub(crate) output: Option<Type>,
}

/// Checks the signature, recording every problem in `ctxt`.
pub(crate) fn validate(ctxt: &Ctxt, sig: &Signature) -> Option<Handler> {
    let name = &sig.ident;
    let mut ok = true;
    let mut error = |tokens: &dyn ToTokens, message: String| {
        ok = false;
        ctxt.error_spanned_by(tokens.to_token_stream(), message);
    };

    if sig.asyncness.is_none() {
        error(
            &sig.fn_token,
            format!("`#[async_handler]` needs an `async fn`: write `async fn {name}(…)`"),
        );
    }
    if let Some(constness) = &sig.constness {
        error(
            constness,
            "a handler cannot be a `const fn`: remove `const`".to_owned(),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        error(
            unsafety,
            "a handler cannot be `unsafe`: Herald calls it from safe code; remove `unsafe`"
                .to_owned(),
        );
    }
    if let Some(abi) = &sig.abi {
        error(
            abi,
            "a handler cannot have an ABI: remove the `extern`".to_owned(),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let generics = if sig.generics.params.is_empty() {
            sig.generics.where_clause.to_token_stream()
        } else {
            sig.generics.to_token_stream()
        };
        error(
            &generics,
            "a handler cannot be generic: it is registered once, for one message type; \
             write one handler per message type"
                .to_owned(),
        );
    }
    if let Some(variadic) = &sig.variadic {
        error(variadic, "a handler cannot be variadic".to_owned());
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        if let Type::ImplTrait(_) = **ty {
            error(ty, "write the return type out: `impl Trait` cannot be checked against the message's reply".to_owned());
        }
    }

    let mut types = Vec::new();
    for (position, arg) in sig.inputs.iter().enumerate() {
        match arg {
            FnArg::Receiver(receiver) => error(
                receiver,
                format!(
                    "a handler is a free function, not a method: move `{name}` out of the `impl` block \
                     and take what it needs as `State<T>` arguments"
                ),
            ),
            FnArg::Typed(typed) => {
                let pattern = render(&typed.pat.to_token_stream());
                match &*typed.ty {
                    Type::Reference(reference) => {
                        let owned = render(&reference.elem.to_token_stream());
                        let message = if position == 0 {
                            format!("take the message by value: `{pattern}: {owned}` (each handler gets its own copy)")
                        } else {
                            format!("take the argument by value: `{pattern}: {owned}`")
                        };
                        error(reference, message);
                    }
                    Type::ImplTrait(_) => error(
                        &typed.ty,
                        "write the argument type out: `impl Trait` would make the handler generic".to_owned(),
                    ),
                    ty => types.push(ty.clone()),
                }
            }
        }
    }
    if sig.inputs.is_empty() {
        let parens = sig.paren_token.span.join();
        ctxt.error_at(
            parens,
            format!(
                "a handler takes its message as first argument, e.g. `async fn {name}(event: OrderPlaced)`, \
                 where `OrderPlaced` derives `herald::Event` or `herald::Command`"
            ),
        );
        ok = false;
    }

    if !ok {
        return None;
    }
    let mut types = types.into_iter();
    let message = types.next()?;
    Some(Handler {
        ident: name.clone(),
        message,
        extractors: types.collect(),
        output: match &sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some((**ty).clone()),
        },
    })
}

impl Handler {
    /// The span the "whole handler" checks point at: the function's name.
    pub(crate) fn span(&self) -> proc_macro2::Span {
        self.ident.span()
    }

    /// The return type, `()` when none is written.
    pub(crate) fn output_tokens(&self) -> TokenStream {
        match &self.output {
            Some(ty) => ty.to_token_stream(),
            None => quote::quote_spanned!(self.ident.span()=> ()),
        }
    }
}
