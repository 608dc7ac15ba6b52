//! `#[event(name = "order.canceled", key = order_id)]` and
//! `#[command(name = "points.grant", reply = PointsGranted, key = user_id)]`.

use super::Kind;
use crate::attr::{one_of, push_error, render, suggest, Options};
use crate::ctxt::Ctxt;
use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use syn::parse::ParseStream;
use syn::{Attribute, LitStr, Token, Type};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(key);
    syn::custom_keyword!(reply);
}

/// What the attributes say; `None` means "not written".
#[derive(Default)]
pub(crate) struct MessageAttrs {
    pub(crate) name: Option<LitStr>,
    pub(crate) key: Option<Ident>,
    pub(crate) reply: Option<Type>,
}

enum MessageOption {
    Name(LitStr),
    Key(Ident),
    Reply(Type),
}

/// Reads every `#[event(..)]` (or `#[command(..)]`) attribute, recording errors in `ctxt`.
pub(crate) fn parse(ctxt: &Ctxt, kind: Kind, attrs: &[Attribute]) -> MessageAttrs {
    let template = match kind {
        Kind::Event => "#[event({})]",
        Kind::Command => "#[command({})]",
    };
    let mut result = MessageAttrs::default();
    for attr in attrs
        .iter()
        .filter(|attr| attr.path().is_ident(kind.attribute()))
    {
        let parser = |input: ParseStream<'_>| Options::parse(input, template);
        let Some(options) = ctxt.ok(attr.parse_args_with(parser)) else {
            continue;
        };
        let mut errors = None;
        let parsed = options.parse_each(&mut errors, |index, input| {
            parse_option(kind, &options, index, input)
        });
        for (index, (key, span, value)) in parsed {
            let repeated = match value {
                MessageOption::Name(name) => result.name.replace(name).is_some(),
                MessageOption::Key(field) => result.key.replace(field).is_some(),
                MessageOption::Reply(reply) => result.reply.replace(reply).is_some(),
            };
            if repeated {
                let message = format!(
                    "`{key}` is given twice; keep one: {}",
                    options.corrected(index, None)
                );
                push_error(&mut errors, syn::Error::new(span, message));
            }
        }
        if let Some(errors) = errors {
            ctxt.syn_error(errors);
        }
    }
    result
}

fn parse_option(
    kind: Kind,
    options: &Options,
    index: usize,
    input: ParseStream<'_>,
) -> syn::Result<(&'static str, Span, MessageOption)> {
    let example = |key: &str| options.example(&example_of(kind, key));
    // A missing value is reported at the key: the end of the input has no span of its own.
    let expect_eq = |input: ParseStream<'_>, key: &str, span: Span| {
        let missing = || {
            syn::Error::new(
                span,
                format!("`{key}` needs a value, e.g. {}", example(key)),
            )
        };
        if input.is_empty() {
            return Err(missing());
        }
        input.parse::<Token![=]>().map_err(|e| {
            syn::Error::new(e.span(), format!("expected `=`, e.g. {}", example(key)))
        })?;
        if input.is_empty() {
            return Err(missing());
        }
        Ok(())
    };
    let lookahead = input.lookahead1();
    let option = if lookahead.peek(kw::name) {
        let key = input.parse::<kw::name>()?;
        expect_eq(input, "name", key.span)?;
        let name: LitStr = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!(
                    "expected the wire name as a string, e.g. {}",
                    example("name")
                ),
            )
        })?;
        if name.value().trim().is_empty() {
            return Err(syn::Error::new(
                name.span(),
                format!("the wire name is empty, e.g. {}", example("name")),
            ));
        }
        ("name", key.span, MessageOption::Name(name))
    } else if lookahead.peek(kw::key) {
        let key = input.parse::<kw::key>()?;
        expect_eq(input, "key", key.span)?;
        let field: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected a field name, e.g. {}", example("key")),
            )
        })?;
        ("key", key.span, MessageOption::Key(field))
    } else if lookahead.peek(kw::reply) && kind == Kind::Command {
        let key = input.parse::<kw::reply>()?;
        expect_eq(input, "reply", key.span)?;
        let reply: Type = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected the reply type, e.g. {}", example("reply")),
            )
        })?;
        ("reply", key.span, MessageOption::Reply(reply))
    } else if input.peek(kw::reply) {
        let key = input.parse::<kw::reply>()?;
        let message = "an event has no reply: its handlers return `()` or `Result<(), E>`; for a request that \
                       gets a reply, derive `Command` instead: #[derive(Command)] #[command(reply = PointsGranted)]";
        return Err(syn::Error::new(key.span, message));
    } else if input.peek(syn::Ident) {
        let key: Ident = input.parse()?;
        let rest: TokenStream = input.parse()?;
        let keys = kind.keys();
        let aliases = [
            ("rename", "name"),
            ("wire_name", "name"),
            ("partition_key", "key"),
            ("response", "reply"),
        ];
        let message = match suggest(&key.to_string(), keys, &aliases).filter(|k| keys.contains(k)) {
            Some(fixed) => {
                let option = match rest.clone().into_iter().next() {
                    Some(TokenTree::Punct(p)) if p.as_char() == '=' => {
                        format!("{fixed} {}", render(&rest))
                    }
                    _ => example_of(kind, fixed),
                };
                format!(
                    "unknown key `{key}` in `#[{}(..)]`; did you mean `{fixed}`? e.g. {}",
                    kind.attribute(),
                    options.corrected(index, Some(&option))
                )
            }
            None => format!(
                "unknown key `{key}` in `#[{}(..)]`: the keys are {}, e.g. {}",
                kind.attribute(),
                one_of(keys),
                options.example(
                    &keys
                        .iter()
                        .map(|key| example_of(kind, key))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            ),
        };
        return Err(syn::Error::new(key.span(), message));
    } else {
        return Err(lookahead.error());
    };
    if !input.is_empty() {
        return Err(input.error(format!(
            "unexpected tokens after `{}`; separate keys with `,`",
            option.0
        )));
    }
    Ok(option)
}

fn example_of(kind: Kind, key: &str) -> String {
    match (kind, key) {
        (Kind::Event, "name") => "name = \"order.canceled\"".to_owned(),
        (Kind::Command, "name") => "name = \"points.grant\"".to_owned(),
        (Kind::Event, "key") => "key = order_id".to_owned(),
        (Kind::Command, "key") => "key = user_id".to_owned(),
        (_, "reply") => "reply = PointsGranted".to_owned(),
        (_, other) => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn parse_attrs(kind: Kind, attrs: Vec<Attribute>) -> Result<MessageAttrs, Vec<String>> {
        let ctxt = Ctxt::new();
        let parsed = parse(&ctxt, kind, &attrs);
        ctxt.check()
            .map(|()| parsed)
            .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    fn errors(kind: Kind, attrs: Vec<Attribute>) -> Vec<String> {
        parse_attrs(kind, attrs).err().expect("expected errors")
    }

    #[test]
    fn parses_event_and_command_keys() {
        let event = parse_attrs(
            Kind::Event,
            vec![parse_quote!(#[event(name = "order.canceled", key = order_id)])],
        )
        .ok()
        .unwrap();
        assert_eq!(event.name.unwrap().value(), "order.canceled");
        assert_eq!(event.key.unwrap(), "order_id");
        assert!(event.reply.is_none());

        let attrs = vec![
            parse_quote!(#[command(reply = Result<u32, String>)]),
            parse_quote!(#[command(key = user_id)]),
        ];
        let command = parse_attrs(Kind::Command, attrs).ok().unwrap();
        assert!(command.name.is_none());
        let reply = command.reply.unwrap();
        assert_eq!(render(&quote::quote!(#reply)), "Result<u32, String>");
    }

    #[test]
    fn ignores_other_attributes() {
        let attrs = vec![
            parse_quote!(#[serde(rename_all = "camelCase")]),
            parse_quote!(#[doc = "x"]),
        ];
        assert!(parse_attrs(Kind::Event, attrs).is_ok());
    }

    #[test]
    fn unknown_keys_suggest_the_corrected_attribute() {
        assert_eq!(
            errors(
                Kind::Event,
                vec![parse_quote!(#[event(nmae = "order.canceled", key = order_id)])]
            ),
            [
                r#"unknown key `nmae` in `#[event(..)]`; did you mean `name`? e.g. #[event(name = "order.canceled", key = order_id)]"#
            ]
        );
        assert_eq!(
            errors(Kind::Command, vec![parse_quote!(#[command(response = Granted)])]),
            ["unknown key `response` in `#[command(..)]`; did you mean `reply`? e.g. #[command(reply = Granted)]"]
        );
        let unknown = errors(Kind::Event, vec![parse_quote!(#[event(colour = "red")])]);
        assert_eq!(
            unknown,
            [
                r#"unknown key `colour` in `#[event(..)]`: the keys are `name` or `key`, e.g. #[event(name = "order.canceled", key = order_id)]"#
            ]
        );
    }

    #[test]
    fn an_event_has_no_reply() {
        let errors = errors(Kind::Event, vec![parse_quote!(#[event(reply = Granted)])]);
        assert!(errors[0].starts_with("an event has no reply"), "{errors:?}");
    }

    #[test]
    fn repeated_keys_are_reported_even_across_attributes() {
        assert_eq!(
            errors(
                Kind::Event,
                vec![parse_quote!(#[event(name = "a", name = "b")])]
            ),
            [r#"`name` is given twice; keep one: #[event(name = "a")]"#]
        );
        assert_eq!(
            errors(
                Kind::Event,
                vec![
                    parse_quote!(#[event(key = a)]),
                    parse_quote!(#[event(key = b)])
                ]
            ),
            ["`key` is given twice; keep one: #[event]"]
        );
    }

    #[test]
    fn bad_values_show_an_example() {
        let errors = errors(
            Kind::Command,
            vec![parse_quote!(#[command(name = points, key = "user_id", reply = , name = "")])],
        );
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].contains(r#"e.g. #[command(name = "points.grant")]"#));
        assert!(errors[1].contains("e.g. #[command(key = user_id)]"));
        assert!(errors[2].contains("`reply` needs a value, e.g. #[command(reply = PointsGranted)]"));
        assert!(errors[3].contains("the wire name is empty"));
    }
}
