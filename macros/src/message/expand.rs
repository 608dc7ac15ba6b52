//! The `Message` implementation and registration the derives write.

use super::attrs::MessageAttrs;
use super::Kind;
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{DeriveInput, LitStr};

/// `impl Message`, the marker trait and the link-time registration, inside `const _: () = { … };`.
pub(crate) fn expand(kind: Kind, input: &DeriveInput, attrs: &MessageAttrs) -> TokenStream {
    let ident = &input.ident;
    let message_impl = message_impl(kind, input, attrs);
    let name = wire_name(input, attrs);
    let kind_variant = kind_variant(kind);
    let rust_type = ident.to_string();
    // Spanned to the type's name so that `line!()` reports the type's line, not the derive's.
    let location = quote_spanned! {ident.span()=>
        module: ::core::module_path!(),
        file: ::core::file!(),
        line: ::core::line!(),
    };
    quote! {
        const _: () = {
            #message_impl

            const __DESCRIPTOR: ::herald::__private::MessageDescriptor = ::herald::__private::MessageDescriptor {
                name: #name,
                kind: ::herald::__private::MessageKind::#kind_variant,
                rust_type: #rust_type,
                #location
                decode: ::herald::__private::Payload::decode::<#ident>,
            };
            ::herald::__private::inventory::submit!(__DESCRIPTOR);
        };
    }
}

/// Just enough for code that uses the type to compile while the derive reports its errors.
pub(crate) fn fallback(kind: Kind, input: &DeriveInput, attrs: &MessageAttrs) -> TokenStream {
    let attrs = MessageAttrs {
        name: attrs.name.clone(),
        key: None,
        reply: attrs.reply.clone(),
    };
    let message_impl = message_impl(kind, input, &attrs);
    quote! {
        const _: () = {
            #message_impl
        };
    }
}

fn message_impl(kind: Kind, input: &DeriveInput, attrs: &MessageAttrs) -> TokenStream {
    let ident = &input.ident;
    let name = wire_name(input, attrs);
    let kind_variant = kind_variant(kind);
    let reply = match &attrs.reply {
        Some(reply) => quote!(#reply),
        None => quote!(()),
    };
    let key = attrs.key.as_ref().map(|key| {
        // Spanned to the key so that a key without `Display` is reported there.
        let to_string = quote_spanned!(key.span()=> ::std::string::ToString::to_string(&self.#key));
        quote! {
            const HAS_KEY: bool = true;

            fn key(&self) -> ::core::option::Option<::std::string::String> {
                ::core::option::Option::Some(#to_string)
            }
        }
    });
    quote! {
        impl ::herald::__private::Message for #ident {
            const NAME: &'static str = #name;
            const KIND: ::herald::__private::MessageKind = ::herald::__private::MessageKind::#kind_variant;
            type Reply = #reply;
            #key
        }

        impl ::herald::__private::#kind_variant for #ident {}
    }
}

/// The `name` written, or the type's name.
fn wire_name(input: &DeriveInput, attrs: &MessageAttrs) -> LitStr {
    attrs
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&input.ident.to_string(), input.ident.span()))
}

fn kind_variant(kind: Kind) -> proc_macro2::Ident {
    let name = match kind {
        Kind::Event => "Event",
        Kind::Command => "Command",
    };
    proc_macro2::Ident::new(name, proc_macro2::Span::call_site())
}
