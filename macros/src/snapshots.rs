//! Expansion snapshots: each `tests/expand/NAME.rs` is expanded on `proc_macro2` (as `cargo expand`
//! would show it) and compared with the committed `tests/expand/NAME.expanded.rs`.
//! `HERALD_BLESS=1 cargo test -p herald-macros snapshots` rewrites the snapshots.

use crate::{handler, message};
use quote::ToTokens;
use std::path::{Path, PathBuf};
use syn::punctuated::Punctuated;
use syn::{Attribute, Item, Meta, Path as SynPath, Token};

/// Expands the Herald macros of a source file, leaving everything else as written.
fn expand_file(source: &str) -> String {
    let file: syn::File = syn::parse_str(source).expect("snapshot input does not parse");
    let mut items = Vec::new();
    for item in file.items {
        match item {
            Item::Fn(mut function) => match take_attr(&mut function.attrs, "async_handler") {
                Some(attr) => {
                    let args = match attr.meta {
                        Meta::List(list) => list.tokens,
                        _ => Default::default(),
                    };
                    items.extend(parse_items(handler::expand(
                        args,
                        function.into_token_stream(),
                    )));
                }
                None => items.push(Item::Fn(function)),
            },
            Item::Struct(_) | Item::Enum(_) => {
                let tokens = item.to_token_stream();
                let (mut item, derives) = strip_derives(item);
                let expansions: Vec<_> = derives
                    .iter()
                    .map(|&kind| parse_items(message::expand(kind, tokens.clone())))
                    .collect();
                if let Item::Struct(s) = &mut item {
                    s.attrs
                        .retain(|a| !a.path().is_ident("event") && !a.path().is_ident("command"));
                }
                if let Item::Enum(e) = &mut item {
                    e.attrs
                        .retain(|a| !a.path().is_ident("event") && !a.path().is_ident("command"));
                }
                items.push(item);
                items.extend(expansions.into_iter().flatten());
            }
            other => items.push(other),
        }
    }
    prettyplease::unparse(&syn::File {
        shebang: None,
        attrs: file.attrs,
        items,
    })
}

fn parse_items(tokens: proc_macro2::TokenStream) -> Vec<Item> {
    syn::parse2::<syn::File>(tokens)
        .expect("the expansion does not parse")
        .items
}

fn take_attr(attrs: &mut Vec<Attribute>, name: &str) -> Option<Attribute> {
    let index = attrs
        .iter()
        .position(|a| a.path().segments.last().is_some_and(|s| s.ident == name))?;
    Some(attrs.remove(index))
}

/// Removes `Event` and `Command` from the item's `#[derive(..)]`, returning which were there.
fn strip_derives(mut item: Item) -> (Item, Vec<message::Kind>) {
    let attrs = match &mut item {
        Item::Struct(s) => &mut s.attrs,
        Item::Enum(e) => &mut e.attrs,
        _ => unreachable!(),
    };
    let mut kinds = Vec::new();
    for attr in attrs.iter_mut().filter(|a| a.path().is_ident("derive")) {
        let paths = attr
            .parse_args_with(Punctuated::<SynPath, Token![,]>::parse_terminated)
            .expect("derive list");
        let kept: Punctuated<SynPath, Token![,]> = paths
            .into_iter()
            .filter(
                |path| match path.segments.last().map(|s| s.ident.to_string()).as_deref() {
                    Some("Event") => (kinds.push(message::Kind::Event), false).1,
                    Some("Command") => (kinds.push(message::Kind::Command), false).1,
                    _ => true,
                },
            )
            .collect();
        *attr = syn::parse_quote!(#[derive(#kept)]);
    }
    (item, kinds)
}

fn inputs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/expand exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| {
            path.extension().is_some_and(|e| e == "rs")
                && !path.to_string_lossy().ends_with(".expanded.rs")
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn expansions_match_the_snapshots() {
    let bless = std::env::var_os("HERALD_BLESS").is_some_and(|v| v != "0");
    let mut mismatches = Vec::new();
    let inputs = inputs();
    assert!(!inputs.is_empty(), "no snapshot inputs in tests/expand");
    for input in inputs {
        let source = std::fs::read_to_string(&input).expect("readable input");
        let expanded = expand_file(&source);
        let snapshot = input.with_extension("expanded.rs");
        let committed = std::fs::read_to_string(&snapshot).ok();
        if committed.as_deref() == Some(expanded.as_str()) {
            continue;
        }
        if bless || committed.is_none() {
            std::fs::write(&snapshot, &expanded).expect("writable snapshot");
        }
        if !bless {
            mismatches.push(format!(
                "{}: expansion differs from the snapshot\n--- expected\n{}\n--- actual\n{expanded}",
                input.display(),
                committed.unwrap_or_else(|| "(none: written now, review it)".to_owned())
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\n\nIf the change is intended: HERALD_BLESS=1 cargo test -p herald-macros snapshots",
        mismatches.join("\n\n")
    );
}
