//! `#[derive(Event)]` and `#[derive(Command)]`: implement `Message` and register the type.

mod attrs;
mod expand;

use crate::attr::suggest;
use crate::ctxt::Ctxt;
use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields};

/// Which derive is expanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Event,
    Command,
}

impl Kind {
    /// The helper attribute: `event` or `command`.
    fn attribute(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Command => "command",
        }
    }

    /// The keys the helper attribute takes.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Event => &["name", "key"],
            Kind::Command => &["name", "reply", "key"],
        }
    }
}

/// Expands the derive. On errors: the errors, plus (for a non-generic type) a bare `Message`
/// implementation so that handlers of the type do not report errors of their own.
pub(crate) fn expand(kind: Kind, input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let ctxt = Ctxt::new();
    let attrs = attrs::parse(&ctxt, kind, &input.attrs);
    validate(&ctxt, kind, &input, &attrs);
    match ctxt.check() {
        Ok(()) => expand::expand(kind, &input, &attrs),
        Err(errors) => {
            let errors = errors.to_compile_error();
            let fallback = input
                .generics
                .params
                .is_empty()
                .then(|| expand::fallback(kind, &input, &attrs));
            quote!(#errors #fallback)
        }
    }
}

fn validate(ctxt: &Ctxt, kind: Kind, input: &DeriveInput, attrs: &attrs::MessageAttrs) {
    let ident = &input.ident;
    let derive = match kind {
        Kind::Event => "Event",
        Kind::Command => "Command",
    };
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        ctxt.error_spanned_by(
            &input.generics,
            format!(
                "a message cannot be generic: its wire name names exactly one type; \
                 derive `{derive}` on a concrete type, e.g. `struct {ident} {{ … }}` without type parameters"
            ),
        );
    }
    if let Data::Union(union) = &input.data {
        ctxt.error_spanned_by(
            union.union_token,
            format!("a message is a struct or an enum; `{ident}` is a union"),
        );
    }
    if let Some(key) = &attrs.key {
        let attribute = kind.attribute();
        match &input.data {
            Data::Struct(data) if matches!(data.fields, Fields::Named(_)) => {
                let names: Vec<String> = data.fields.iter().filter_map(|f| f.ident.as_ref()).map(|i| i.to_string()).collect();
                if !names.iter().any(|name| key == name) {
                    let candidates: Vec<&str> = names.iter().map(String::as_str).collect();
                    let hint = match suggest(&key.to_string(), &candidates, &[]) {
                        Some(field) => format!("did you mean `{field}`? e.g. #[{attribute}(key = {field})]"),
                        None if candidates.is_empty() => format!("`{ident}` has no fields; remove `key`"),
                        None => format!("the fields are {}", crate::attr::one_of(&candidates)),
                    };
                    ctxt.error_spanned_by(key, format!("`{ident}` has no field `{key}`; {hint}"));
                }
            }
            _ => ctxt.error_spanned_by(
                key,
                format!("`key = {key}` names a field, but `{ident}` has no named fields: give it some, or remove `key`"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(kind: Kind, input: TokenStream) -> Vec<String> {
        let input: DeriveInput = syn::parse2(input).unwrap();
        let ctxt = Ctxt::new();
        let attrs = attrs::parse(&ctxt, kind, &input.attrs);
        validate(&ctxt, kind, &input, &attrs);
        ctxt.check().map_or_else(
            |e| e.into_iter().map(|e| e.to_string()).collect(),
            |()| Vec::new(),
        )
    }

    #[test]
    fn a_valid_message_has_no_errors() {
        let input = quote!(
            #[event(key = order_id)]
            struct OrderCanceled {
                order_id: u64,
            }
        );
        assert!(errors(Kind::Event, input).is_empty());
        assert!(errors(
            Kind::Event,
            quote!(
                enum Changed {
                    A,
                    B,
                }
            )
        )
        .is_empty());
    }

    #[test]
    fn the_key_must_be_a_field() {
        let input = quote!(
            #[event(key = order)]
            struct OrderCanceled {
                order_id: u64,
                reason: String,
            }
        );
        assert_eq!(
            errors(Kind::Event, input),
            ["`OrderCanceled` has no field `order`; did you mean `order_id`? e.g. #[event(key = order_id)]"]
        );
        let input = quote!(
            #[event(key = user)]
            struct OrderCanceled {
                order_id: u64,
            }
        );
        assert_eq!(
            errors(Kind::Event, input),
            ["`OrderCanceled` has no field `user`; the fields are `order_id`"]
        );
        let input = quote!(
            #[command(key = id)]
            struct Tuple(u64);
        );
        assert_eq!(
            errors(Kind::Command, input),
            ["`key = id` names a field, but `Tuple` has no named fields: give it some, or remove `key`"]
        );
    }

    #[test]
    fn generic_messages_and_unions_are_rejected() {
        let errors = errors(Kind::Event, quote!(union Both<T> { a: T }));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("a message cannot be generic"));
        assert!(errors[1].contains("is a union"));
    }

    #[test]
    fn errors_come_with_a_fallback_implementation() {
        let output = expand(
            Kind::Event,
            quote!(
                #[event(nmae = "x")]
                struct OrderCanceled;
            ),
        )
        .to_string();
        assert!(output.contains("compile_error"), "{output}");
        assert!(
            output.contains("impl :: herald :: __private :: Message for OrderCanceled"),
            "{output}"
        );
        assert!(!output.contains("inventory"), "{output}");
        let output = expand(
            Kind::Event,
            quote!(
                struct Generic<T>(T);
            ),
        )
        .to_string();
        assert!(!output.contains("impl"), "{output}");
    }
}
