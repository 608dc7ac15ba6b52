use herald::{async_handler, Bus, HandlerError};

// A command handler returning `Result<Reply, E>`, with every option.
#[async_handler(
    name = "loyalty.grant_points",
    pool = "loyalty",
    retry(max_attempts = 5, backoff = exponential(100ms, 2.0, 10s), jitter),
    timeout = "1.5s",
    on_failure = log,
    rate = "180/s",
    dedupe,
    ordered,
)]
async fn grant_points(command: GrantPoints, bus: Bus) -> Result<PointsGranted, HandlerError> {
    bus.publish(PointsChanged { user_id: command.user_id }).await?;
    Ok(PointsGranted { total: command.points })
}

// Partial retry policy: the rest comes from `RetryPolicy::DEFAULT`.
#[async_handler(retry(backoff = fixed(250ms)))]
async fn audit(command: AuditCommand) {}
