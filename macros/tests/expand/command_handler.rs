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
    circuit_breaker(failures = 3, open_for = "10s"),
    start_within = "30s",
)]
async fn grant_points(command: GrantPoints, bus: Bus) -> Result<PointsGranted, HandlerError> {
    bus.publish(PointsChanged { user_id: command.user_id }).await?;
    Ok(PointsGranted { total: command.points })
}

// Partial retry policy and breaker: the rest comes from `RetryPolicy::DEFAULT` and
// `CircuitBreaker::DEFAULT`.
#[async_handler(retry(backoff = fixed(250ms)), circuit_breaker(open_for = 1m))]
async fn audit(command: AuditCommand) {}
