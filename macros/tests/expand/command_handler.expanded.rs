use herald::{async_handler, Bus, HandlerError};
async fn grant_points(
    command: GrantPoints,
    bus: Bus,
) -> Result<PointsGranted, HandlerError> {
    bus.publish(PointsChanged {
            user_id: command.user_id,
        })
        .await?;
    Ok(PointsGranted {
        total: command.points,
    })
}
const _: () = {
    fn __call(
        inv: ::herald::__private::Invocation,
    ) -> ::herald::__private::BoxFuture<'static, ::herald::__private::CallResult> {
        ::std::boxed::Box::pin(async move {
            let _: <GrantPoints as ::herald::__private::Message>::Reply;
            let a0: GrantPoints = inv.message::<GrantPoints>()?;
            let a1: Bus = <Bus as ::herald::__private::FromInvocation>::from_invocation(
                &inv,
            )?;
            let output: Result<PointsGranted, HandlerError> = grant_points(a0, a1).await;
            let reply: <GrantPoints as ::herald::__private::Message>::Reply = <Result<
                PointsGranted,
                HandlerError,
            > as ::herald::__private::IntoOutcome<
                <GrantPoints as ::herald::__private::Message>::Reply,
                _,
            >>::into_outcome(output)?;
            ::core::result::Result::Ok(
                ::std::boxed::Box::new(reply) as ::herald::__private::AnyReply,
            )
        })
    }
    fn __requirements() -> ::std::vec::Vec<::herald::__private::Requirement> {
        [<Bus as ::herald::__private::FromInvocation>::requirement()]
            .into_iter()
            .flatten()
            .collect()
    }
    const _: () = ::core::assert!(
        < GrantPoints as ::herald::__private::Message > ::HAS_KEY,
        "`ordered` needs a message key: add `key = <field>` to the `#[event(..)]` or `#[command(..)]` attribute of `GrantPoints`, e.g. `#[event(key = order_id)]`"
    );
    const __DESCRIPTOR: ::herald::__private::HandlerDescriptor = ::herald::__private::HandlerDescriptor {
        name: "loyalty.grant_points",
        message: <GrantPoints as ::herald::__private::Message>::NAME,
        message_type: "GrantPoints",
        kind: <GrantPoints as ::herald::__private::Message>::KIND,
        pool: ::core::option::Option::Some("loyalty"),
        options: ::herald::__private::HandlerOptions {
            retry: ::herald::__private::RetryPolicy {
                max_attempts: 5,
                backoff: ::herald::__private::Backoff::Exponential {
                    initial: ::herald::__private::Duration::from_millis(100),
                    factor: 2.0,
                    max: ::herald::__private::Duration::from_secs(10),
                },
                jitter: true,
            },
            timeout: ::core::option::Option::Some(
                ::herald::__private::Duration::from_millis(1500),
            ),
            on_failure: ::herald::__private::OnFailure::Log,
            rate: ::core::option::Option::Some(::herald::__private::Rate {
                count: 180,
                per: ::herald::__private::Duration::from_secs(1),
            }),
            dedupe: true,
            ordered: true,
            circuit_breaker: ::core::option::Option::Some(::herald::__private::CircuitBreaker {
                failures: 3,
                open_for: ::herald::__private::Duration::from_secs(10),
            }),
            start_within: ::core::option::Option::Some(
                ::herald::__private::Duration::from_secs(30),
            ),
        },
        module: ::core::module_path!(),
        file: ::core::file!(),
        line: ::core::line!(),
        requirements: __requirements,
        call: __call,
    };
    ::herald::__private::inventory::submit!(__DESCRIPTOR);
};
async fn audit(command: AuditCommand) {}
const _: () = {
    fn __call(
        inv: ::herald::__private::Invocation,
    ) -> ::herald::__private::BoxFuture<'static, ::herald::__private::CallResult> {
        ::std::boxed::Box::pin(async move {
            let _: <AuditCommand as ::herald::__private::Message>::Reply;
            let a0: AuditCommand = inv.message::<AuditCommand>()?;
            let output: () = audit(a0).await;
            let reply: <AuditCommand as ::herald::__private::Message>::Reply = <() as ::herald::__private::IntoOutcome<
                <AuditCommand as ::herald::__private::Message>::Reply,
                _,
            >>::into_outcome(output)?;
            ::core::result::Result::Ok(
                ::std::boxed::Box::new(reply) as ::herald::__private::AnyReply,
            )
        })
    }
    fn __requirements() -> ::std::vec::Vec<::herald::__private::Requirement> {
        ::std::vec::Vec::new()
    }
    const __DESCRIPTOR: ::herald::__private::HandlerDescriptor = ::herald::__private::HandlerDescriptor {
        name: ::core::concat!(::core::module_path!(), "::", "audit"),
        message: <AuditCommand as ::herald::__private::Message>::NAME,
        message_type: "AuditCommand",
        kind: <AuditCommand as ::herald::__private::Message>::KIND,
        pool: ::core::option::Option::None,
        options: ::herald::__private::HandlerOptions {
            retry: ::herald::__private::RetryPolicy {
                backoff: ::herald::__private::Backoff::Fixed(
                    ::herald::__private::Duration::from_millis(250),
                ),
                ..::herald::__private::RetryPolicy::DEFAULT
            },
            circuit_breaker: ::core::option::Option::Some(::herald::__private::CircuitBreaker {
                open_for: ::herald::__private::Duration::from_secs(60),
                ..::herald::__private::CircuitBreaker::DEFAULT
            }),
            ..::herald::__private::HandlerOptions::DEFAULT
        },
        module: ::core::module_path!(),
        file: ::core::file!(),
        line: ::core::line!(),
        requirements: __requirements,
        call: __call,
    };
    ::herald::__private::inventory::submit!(__DESCRIPTOR);
};
