//! `#[async_handler(...)]`: registers an `async fn` as the handler of its first argument's message.

mod args;
mod expand;
mod signature;

use crate::ctxt::Ctxt;
use args::HandlerArgs;
use proc_macro2::TokenStream;
use quote::quote;
use signature::HandlerFn;

/// Expands `#[async_handler(args)] item`. On errors: every error, then the function unchanged, so
/// that the rest of the crate still sees it and reports nothing more about it.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let ctxt = Ctxt::new();
    let args = ctxt.ok(syn::parse2::<HandlerArgs>(args));
    let handler = ctxt
        .ok(syn::parse2::<HandlerFn>(item.clone()))
        .and_then(|f| signature::validate(&ctxt, &f.sig));
    match (ctxt.check(), args, handler) {
        (Ok(()), Some(args), Some(handler)) => expand::expand(&args, &handler, item),
        (result, ..) => {
            let errors = result.err().map(|e| e.to_compile_error());
            quote!(#errors #item)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_messages(args: TokenStream, item: TokenStream) -> Vec<String> {
        let ctxt = Ctxt::new();
        let _ = ctxt.ok(syn::parse2::<HandlerArgs>(args));
        if let Some(f) = ctxt.ok(syn::parse2::<HandlerFn>(item)) {
            signature::validate(&ctxt, &f.sig);
        }
        ctxt.check().map_or_else(
            |e| e.into_iter().map(|e| e.to_string()).collect(),
            |()| Vec::new(),
        )
    }

    #[test]
    fn a_valid_handler_has_no_errors() {
        let item = quote!(
            pub async fn notify(
                event: OrderPlaced,
                State(db): State<Db>,
                meta: Meta,
            ) -> Result<(), Error> {
            }
        );
        assert!(error_messages(quote!(), item).is_empty());
    }

    #[test]
    fn reports_every_signature_problem() {
        let messages = error_messages(
            quote!(),
            quote!(
                fn notify<T>(&self) {}
            ),
        );
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].contains("needs an `async fn`: write `async fn notify(…)`"));
        assert!(messages[1].contains("cannot be generic"));
        assert!(messages[2].contains("not a method"));
    }

    #[test]
    fn reports_argument_and_signature_problems_together() {
        let messages = error_messages(
            quote!(retires = 3),
            quote!(
                async fn notify() {}
            ),
        );
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("unknown option `retires`"));
        assert!(messages[1].contains("takes its message as first argument"));
    }

    #[test]
    fn arguments_are_taken_by_value() {
        let messages = error_messages(
            quote!(),
            quote!(
                async fn notify(event: &OrderPlaced, meta: &Meta) {}
            ),
        );
        assert_eq!(
            messages,
            [
                "take the message by value: `event: OrderPlaced` (each handler gets its own copy)",
                "take the argument by value: `meta: Meta`",
            ]
        );
    }

    #[test]
    fn impl_trait_is_rejected() {
        let messages = error_messages(
            quote!(),
            quote!(
                async fn notify(event: impl Sized) -> impl Sized {}
            ),
        );
        assert_eq!(messages.len(), 2, "{messages:?}");
    }

    #[test]
    fn not_a_function() {
        let messages = error_messages(
            quote!(),
            quote!(
                struct NotAFunction;
            ),
        );
        assert_eq!(messages, ["`#[async_handler]` goes on an `async fn`"]);
    }

    #[test]
    fn errors_keep_the_function_unchanged() {
        let item = quote!(
            fn notify(event: OrderPlaced) {}
        );
        let output = expand(quote!(), item.clone()).to_string();
        assert!(output.starts_with(":: core :: compile_error !"), "{output}");
        assert!(output.ends_with(&item.to_string()), "{output}");
    }
}
