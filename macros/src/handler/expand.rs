//! The code `#[async_handler]` writes beside the user's function: a call function and the
//! registration.
//!
//! Type errors must be reported once, at the user's code (STYLE.md: "one mistake does not cascade").
//! So every expression that needs a type to be a message, an extractor or the right reply is spanned
//! to that type as the user wrote it, and needs it through a qualified path (`<M as Message>::Reply`)
//! rather than through a function's bound: rustc then reports one error per span and drops the
//! identical ones (a hidden `assert_message::<M>()` would add a second error, whose only difference
//! is a "required by a bound in `assert_message`" note). The non-`Send` future is reported at the
//! function's name, where the returned future is boxed.

use super::args::{Backoff, BreakerArgs, HandlerArgs, OnFailure, RetryArgs};
use super::signature::Handler;
use crate::attr::render;
use crate::duration;
use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;

/// The user's function as written, followed by `const _: () = { … };` with the registration.
pub(crate) fn expand(args: &HandlerArgs, handler: &Handler, item: TokenStream) -> TokenStream {
    let call = call_fn(handler);
    let requirements = requirements_fn(handler);
    let ordered = args.ordered.map(|span| ordered_check(span, handler));
    let descriptor = descriptor(args, handler);
    quote! {
        #item

        const _: () = {
            #call
            #requirements
            #ordered
            const __DESCRIPTOR: ::herald::__private::HandlerDescriptor = #descriptor;
            ::herald::__private::inventory::submit!(__DESCRIPTOR);
        };
    }
}

/// `a0` (the message), `a1`, … (the extractors).
fn arg_names(handler: &Handler) -> Vec<Ident> {
    (0..=handler.extractors.len())
        .map(|i| format_ident!("a{}", i))
        .collect()
}

/// Builds each argument from the invocation, calls the handler and erases its outcome.
fn call_fn(handler: &Handler) -> TokenStream {
    let ident = &handler.ident;
    let message = &handler.message;
    let output = handler.output_tokens();
    let args = arg_names(handler);
    // The generated locals are interpolated as identifiers of one span wherever they appear: written
    // inside `quote_spanned!` they would take the user's span instead, and where the user's tokens
    // come from a `macro_rules!` that span's hygiene would not see the locals declared here.
    let (inv, output_value) = (format_ident!("inv"), format_ident!("output"));
    let reply = quote_spanned!(message.span()=> <#message as ::herald::__private::Message>::Reply);
    let extract_message = quote_spanned!(message.span()=> #inv.message::<#message>());
    let extractors = handler.extractors.iter().zip(&args[1..]).map(|(ty, arg)| {
        let extract = quote_spanned! {ty.span()=>
            <#ty as ::herald::__private::FromInvocation>::from_invocation(&#inv)
        };
        quote!(let #arg: #ty = #extract?;)
    });
    // Qualified, so that the error names both types: "returns `u32`, but its message expects `Reply`".
    let outcome = quote_spanned! {output.span()=>
        <#output as ::herald::__private::IntoOutcome<#reply, _>>::into_outcome(#output_value)
    };
    // `let _: <M as Message>::Reply;` comes first so that a type that is not a message is reported
    // through it (no "required by" note) and not through `inv.message`'s bound: the error is then
    // identical to the descriptor's, and shown once.
    let body = quote! {
        let _: #reply;
        let a0: #message = #extract_message?;
        #(#extractors)*
        let #output_value: #output = #ident(#(#args),*).await;
        let reply: #reply = #outcome?;
        ::core::result::Result::Ok(::std::boxed::Box::new(reply) as ::herald::__private::AnyReply)
    };
    // Boxing the future as `dyn Future + Send` is where a non-`Send` handler fails: at its name.
    let boxed = quote_spanned!(handler.span()=> ::std::boxed::Box::pin(async move { #body }));
    quote! {
        fn __call(
            #inv: ::herald::__private::Invocation,
        ) -> ::herald::__private::BoxFuture<'static, ::herald::__private::CallResult> {
            #boxed
        }
    }
}

/// The state types the extractors need, checked by `build()`.
fn requirements_fn(handler: &Handler) -> TokenStream {
    let extractors = &handler.extractors;
    let requirements = extractors.iter().map(|ty| {
        quote_spanned!(ty.span()=> <#ty as ::herald::__private::FromInvocation>::requirement())
    });
    let body = if extractors.is_empty() {
        quote!(::std::vec::Vec::new())
    } else {
        quote! {
            [#(#requirements),*]
                .into_iter()
                .flatten()
                .collect()
        }
    };
    quote! {
        fn __requirements() -> ::std::vec::Vec<::herald::__private::Requirement> {
            #body
        }
    }
}

/// `ordered` keeps messages of one key in order, so the message must have a key.
fn ordered_check(span: Span, handler: &Handler) -> TokenStream {
    let message = &handler.message;
    let text = format!(
        "`ordered` needs a message key: add `key = <field>` to the `#[event(..)]` or `#[command(..)]` \
         attribute of `{}`, e.g. `#[event(key = order_id)]`",
        render(&message.to_token_stream())
    );
    let has_key =
        quote_spanned!(message.span()=> <#message as ::herald::__private::Message>::HAS_KEY);
    quote_spanned! {span=>
        const _: () = ::core::assert!(#has_key, #text);
    }
}

fn descriptor(args: &HandlerArgs, handler: &Handler) -> TokenStream {
    let message = &handler.message;
    // `module_path!`, `file!` and `line!` spanned to the function name report the handler's line,
    // not the attribute's.
    let span = handler.span();
    let name = match &args.name {
        Some(name) => name.to_token_stream(),
        None => {
            let ident = handler.ident.to_string();
            quote_spanned!(span=> ::core::concat!(::core::module_path!(), "::", #ident))
        }
    };
    let message_type = render(&message.to_token_stream());
    let message_name =
        quote_spanned!(message.span()=> <#message as ::herald::__private::Message>::NAME);
    let message_kind =
        quote_spanned!(message.span()=> <#message as ::herald::__private::Message>::KIND);
    let pool = match &args.pool {
        Some(pool) => quote!(::core::option::Option::Some(#pool)),
        None => quote!(::core::option::Option::None),
    };
    let options = options(args);
    let location = quote_spanned! {span=>
        module: ::core::module_path!(),
        file: ::core::file!(),
        line: ::core::line!(),
    };
    quote! {
        ::herald::__private::HandlerDescriptor {
            name: #name,
            message: #message_name,
            message_type: #message_type,
            kind: #message_kind,
            pool: #pool,
            options: #options,
            #location
            requirements: __requirements,
            call: __call,
        }
    }
}

/// The options the user wrote; the rest come from `HandlerOptions::DEFAULT`.
fn options(args: &HandlerArgs) -> TokenStream {
    let mut fields = Vec::new();
    if let Some(retry) = &args.retry {
        let retry = retry_policy(retry);
        fields.push(quote!(retry: #retry));
    }
    if let Some(timeout) = args.timeout {
        let timeout = duration::to_tokens(timeout);
        fields.push(quote!(timeout: ::core::option::Option::Some(#timeout)));
    }
    if let Some(on_failure) = args.on_failure {
        let variant = match on_failure {
            OnFailure::DeadLetter => quote!(DeadLetter),
            OnFailure::Log => quote!(Log),
            OnFailure::Ignore => quote!(Ignore),
        };
        fields.push(quote!(on_failure: ::herald::__private::OnFailure::#variant));
    }
    if let Some((count, per)) = args.rate {
        let count = Literal::u32_unsuffixed(count);
        let per = duration::to_tokens(per);
        fields.push(quote!(rate: ::core::option::Option::Some(::herald::__private::Rate { count: #count, per: #per })));
    }
    if args.dedupe {
        fields.push(quote!(dedupe: true));
    }
    if args.ordered.is_some() {
        fields.push(quote!(ordered: true));
    }
    if let Some(breaker) = &args.circuit_breaker {
        let breaker = circuit_breaker(breaker);
        fields.push(quote!(circuit_breaker: ::core::option::Option::Some(#breaker)));
    }
    if let Some(limit) = args.start_within {
        let limit = duration::to_tokens(limit);
        fields.push(quote!(start_within: ::core::option::Option::Some(#limit)));
    }
    struct_with_defaults(quote!(::herald::__private::HandlerOptions), fields, 8)
}

fn circuit_breaker(breaker: &BreakerArgs) -> TokenStream {
    let mut fields = Vec::new();
    if let Some(failures) = breaker.failures {
        let failures = Literal::u32_unsuffixed(failures);
        fields.push(quote!(failures: #failures));
    }
    if let Some(open_for) = breaker.open_for {
        let open_for = duration::to_tokens(open_for);
        fields.push(quote!(open_for: #open_for));
    }
    struct_with_defaults(quote!(::herald::__private::CircuitBreaker), fields, 2)
}

fn retry_policy(retry: &RetryArgs) -> TokenStream {
    let mut fields = Vec::new();
    if let Some(max_attempts) = retry.max_attempts {
        let max_attempts = Literal::u32_unsuffixed(max_attempts);
        fields.push(quote!(max_attempts: #max_attempts));
    }
    if let Some(backoff) = retry.backoff {
        let backoff = match backoff {
            Backoff::Fixed(delay) => {
                let delay = duration::to_tokens(delay);
                quote!(::herald::__private::Backoff::Fixed(#delay))
            }
            Backoff::Exponential {
                initial,
                factor,
                max,
            } => {
                let initial = duration::to_tokens(initial);
                let factor = Literal::f64_unsuffixed(factor);
                let max = duration::to_tokens(max);
                quote!(::herald::__private::Backoff::Exponential { initial: #initial, factor: #factor, max: #max })
            }
        };
        fields.push(quote!(backoff: #backoff));
    }
    if retry.jitter {
        fields.push(quote!(jitter: true));
    }
    struct_with_defaults(quote!(::herald::__private::RetryPolicy), fields, 3)
}

/// `Type::DEFAULT`, `Type { a, ..Type::DEFAULT }` or `Type { a, b, c }`, whichever says just what was
/// written.
fn struct_with_defaults(
    ty: TokenStream,
    fields: Vec<TokenStream>,
    field_count: usize,
) -> TokenStream {
    if fields.is_empty() {
        quote!(#ty::DEFAULT)
    } else if fields.len() == field_count {
        quote!(#ty { #(#fields),* })
    } else {
        quote!(#ty { #(#fields,)* ..#ty::DEFAULT })
    }
}
