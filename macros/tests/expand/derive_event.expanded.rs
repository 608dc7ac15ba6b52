use herald::Event;
use serde::{Deserialize, Serialize};
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderCanceled {
    pub order_id: u64,
    pub reason: String,
}
const _: () = {
    impl ::herald::__private::Message for OrderCanceled {
        const NAME: &'static str = "order.canceled";
        const KIND: ::herald::__private::MessageKind = ::herald::__private::MessageKind::Event;
        type Reply = ();
        const HAS_KEY: bool = true;
        fn key(&self) -> ::core::option::Option<::std::string::String> {
            ::core::option::Option::Some(
                ::std::string::ToString::to_string(&self.order_id),
            )
        }
    }
    impl ::herald::__private::Event for OrderCanceled {}
    const __DESCRIPTOR: ::herald::__private::MessageDescriptor = ::herald::__private::MessageDescriptor {
        name: "order.canceled",
        kind: ::herald::__private::MessageKind::Event,
        rust_type: "OrderCanceled",
        module: ::core::module_path!(),
        file: ::core::file!(),
        line: ::core::line!(),
        decode: ::herald::__private::Payload::decode::<OrderCanceled>,
    };
    ::herald::__private::inventory::submit!(__DESCRIPTOR);
};
#[derive(Clone, Serialize, Deserialize)]
enum CatalogChanged {
    Added(u64),
    Removed(u64),
}
const _: () = {
    impl ::herald::__private::Message for CatalogChanged {
        const NAME: &'static str = "CatalogChanged";
        const KIND: ::herald::__private::MessageKind = ::herald::__private::MessageKind::Event;
        type Reply = ();
    }
    impl ::herald::__private::Event for CatalogChanged {}
    const __DESCRIPTOR: ::herald::__private::MessageDescriptor = ::herald::__private::MessageDescriptor {
        name: "CatalogChanged",
        kind: ::herald::__private::MessageKind::Event,
        rust_type: "CatalogChanged",
        module: ::core::module_path!(),
        file: ::core::file!(),
        line: ::core::line!(),
        decode: ::herald::__private::Payload::decode::<CatalogChanged>,
    };
    ::herald::__private::inventory::submit!(__DESCRIPTOR);
};
