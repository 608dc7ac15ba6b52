use herald::Command;
use serde::{Deserialize, Serialize};
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantPoints {
    pub user_id: u64,
    pub points: u32,
}
const _: () = {
    impl ::herald::__private::Message for GrantPoints {
        const NAME: &'static str = "points.grant";
        const KIND: ::herald::__private::MessageKind = ::herald::__private::MessageKind::Command;
        type Reply = PointsGranted;
    }
    impl ::herald::__private::Command for GrantPoints {}
    const __DESCRIPTOR: ::herald::__private::MessageDescriptor = ::herald::__private::MessageDescriptor {
        name: "points.grant",
        kind: ::herald::__private::MessageKind::Command,
        rust_type: "GrantPoints",
        module: ::core::module_path!(),
        file: ::core::file!(),
        line: ::core::line!(),
        decode: ::herald::__private::Payload::decode::<GrantPoints>,
    };
    ::herald::__private::inventory::submit!(__DESCRIPTOR);
};
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResetPoints {
    pub user_id: u64,
}
const _: () = {
    impl ::herald::__private::Message for ResetPoints {
        const NAME: &'static str = "ResetPoints";
        const KIND: ::herald::__private::MessageKind = ::herald::__private::MessageKind::Command;
        type Reply = ();
        const HAS_KEY: bool = true;
        fn key(&self) -> ::core::option::Option<::std::string::String> {
            ::core::option::Option::Some(
                ::std::string::ToString::to_string(&self.user_id),
            )
        }
    }
    impl ::herald::__private::Command for ResetPoints {}
    const __DESCRIPTOR: ::herald::__private::MessageDescriptor = ::herald::__private::MessageDescriptor {
        name: "ResetPoints",
        kind: ::herald::__private::MessageKind::Command,
        rust_type: "ResetPoints",
        module: ::core::module_path!(),
        file: ::core::file!(),
        line: ::core::line!(),
        decode: ::herald::__private::Payload::decode::<ResetPoints>,
    };
    ::herald::__private::inventory::submit!(__DESCRIPTOR);
};
