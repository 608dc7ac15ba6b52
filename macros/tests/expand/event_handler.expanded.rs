use herald::{async_handler, Meta, State};
pub async fn send_receipt(event: OrderPlaced, State(mailer): State<Mailer>, meta: Meta) {
    mailer.send(event.email, meta.id()).await;
}
const _: () = {
    fn __call(
        inv: ::herald::__private::Invocation,
    ) -> ::herald::__private::BoxFuture<'static, ::herald::__private::CallResult> {
        ::std::boxed::Box::pin(async move {
            let a0: OrderPlaced = inv.message()?;
            let a1: State<Mailer> = ::herald::__private::FromInvocation::from_invocation(
                &inv,
            )?;
            let a2: Meta = ::herald::__private::FromInvocation::from_invocation(&inv)?;
            ::herald::__private::into_call_result::<
                OrderPlaced,
                _,
                _,
            >(send_receipt(a0, a1, a2).await)
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
    #[allow(dead_code)]
    fn __check(a0: OrderPlaced, a1: State<Mailer>, a2: Meta) {
        ::herald::__private::assert_message::<OrderPlaced>();
        ::herald::__private::assert_extractor::<State<Mailer>>();
        ::herald::__private::assert_extractor::<Meta>();
        ::herald::__private::assert_returns::<OrderPlaced, (), _>();
        ::herald::__private::assert_send(send_receipt(a0, a1, a2));
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
