use herald::{async_handler, Meta, State};
pub async fn send_receipt(event: OrderPlaced, State(mailer): State<Mailer>, meta: Meta) {
    mailer.send(event.email, meta.id()).await;
}
const _: () = {
    fn __call(
        inv: ::herald::__private::Invocation,
    ) -> ::herald::__private::BoxFuture<'static, ::herald::__private::CallResult> {
        ::std::boxed::Box::pin(async move {
            let _: <OrderPlaced as ::herald::__private::Message>::Reply;
            let a0: OrderPlaced = inv.message::<OrderPlaced>()?;
            let a1: State<Mailer> = <State<
                Mailer,
            > as ::herald::__private::FromInvocation>::from_invocation(&inv)?;
            let a2: Meta = <Meta as ::herald::__private::FromInvocation>::from_invocation(
                &inv,
            )?;
            let output: () = send_receipt(a0, a1, a2).await;
            let reply: <OrderPlaced as ::herald::__private::Message>::Reply = <() as ::herald::__private::IntoOutcome<
                <OrderPlaced as ::herald::__private::Message>::Reply,
                _,
            >>::into_outcome(output)?;
            ::core::result::Result::Ok(
                ::std::boxed::Box::new(reply) as ::herald::__private::AnyReply,
            )
        })
    }
    fn __requirements() -> ::std::vec::Vec<::herald::__private::Requirement> {
        [
            <State<Mailer> as ::herald::__private::FromInvocation>::requirement(),
            <Meta as ::herald::__private::FromInvocation>::requirement(),
        ]
            .into_iter()
            .flatten()
            .collect()
    }
    const __DESCRIPTOR: ::herald::__private::HandlerDescriptor = ::herald::__private::HandlerDescriptor {
        name: ::core::concat!(::core::module_path!(), "::", "send_receipt"),
        message: <OrderPlaced as ::herald::__private::Message>::NAME,
        message_type: "OrderPlaced",
        kind: <OrderPlaced as ::herald::__private::Message>::KIND,
        pool: ::core::option::Option::None,
        options: ::herald::__private::HandlerOptions::DEFAULT,
        module: ::core::module_path!(),
        file: ::core::file!(),
        line: ::core::line!(),
        requirements: __requirements,
        call: __call,
    };
    ::herald::__private::inventory::submit!(__DESCRIPTOR);
};
