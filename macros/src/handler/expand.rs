//! The code `#[async_handler]` writes beside the user's function: a call function, the checks that
//! make the compiler point at the user's code, and the registration.

use super::args::{Backoff, HandlerArgs, OnFailure, RetryArgs};
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
    let checks = checks_fn(handler);
    let ordered = args.ordered.map(|span| ordered_check(span, handler));
    let descriptor = descriptor(args, handler);
    quote! {
        #item

        const _: () = {
            #call
            #requirements
            #checks
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
    let args = arg_names(handler);
    let extractor_args = &args[1..];
    let extractors = &handler.extractors;
    quote! {
        fn __call(
            inv: ::herald::__private::Invocation,
        ) -> ::herald::__private::BoxFuture<'static, ::herald::__private::CallResult> {
            ::std::boxed::Box::pin(async move {
                let a0: #message = inv.message()?;
                #( let #extractor_args: #extractors = ::herald::__private::FromInvocation::from_invocation(&inv)?; )*
                ::herald::__private::into_call_result::<#message, _, _>(#ident(#(#args),*).await)
            })
        }
    }
}

/// The state types the extractors need, checked by `build()`.
fn requirements_fn(handler: &Handler) -> TokenStream {
    let extractors = &handler.extractors;
    let body = if extractors.is_empty() {
        quote!(::std::vec::Vec::new())
    } else {
        quote! {
            [#(<#extractors as ::herald::__private::FromInvocation>::requirement()),*]
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

/// Never called: each line makes the compiler check one rule and report it at the user's code.
fn checks_fn(handler: &Handler) -> TokenStream {
    let ident = &handler.ident;
    let message = &handler.message;
    let args = arg_names(handler);
    let types = std::iter::once(message).chain(&handler.extractors);
    let assert_message = quote_spanned! {message.span()=>
        ::herald::__private::assert_message::<#message>();
    };
    let assert_extractors = handler.extractors.iter().map(|ty| {
        quote_spanned! {ty.span()=>
            ::herald::__private::assert_extractor::<#ty>();
        }
    });
    let output = handler.output_tokens();
    let assert_returns = quote_spanned! {output.span()=>
        ::herald::__private::assert_returns::<#message, #output, _>();
    };
    let assert_send = quote_spanned! {handler.span()=>
        ::herald::__private::assert_send(#ident(#(#args),*));
    };
    quote! {
        #[allow(dead_code)]
        fn __check(#(#args: #types),*) {
            #assert_message
            #(#assert_extractors)*
            #assert_returns
            #assert_send
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
    quote_spanned! {span=>
        const _: () = ::core::assert!(<#message as ::herald::__private::Message>::HAS_KEY, #text);
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
            message: <#message as ::herald::__private::Message>::NAME,
            message_type: #message_type,
            kind: <#message as ::herald::__private::Message>::KIND,
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
    struct_with_defaults(quote!(::herald::__private::HandlerOptions), fields, 6)
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
