//! Delays between attempts, from the handler's `retry(..)` option, computed with `backon`.

use crate::model::options::{Backoff, RetryPolicy};
use backon::{BackoffBuilder, ConstantBuilder, ExponentialBuilder};
use std::time::Duration;

/// The delays before attempts 2, 3, ... of one job.
pub(crate) type Delays = Box<dyn Iterator<Item = Duration> + Send>;

pub(crate) fn delays(policy: &RetryPolicy) -> Delays {
    let retries = policy.max_attempts.saturating_sub(1) as usize;
    match policy.backoff {
        Backoff::Fixed(delay) => {
            let builder = ConstantBuilder::default()
                .with_delay(delay)
                .with_max_times(retries);
            let builder = if policy.jitter {
                builder.with_jitter()
            } else {
                builder
            };
            Box::new(builder.build())
        }
        Backoff::Exponential {
            initial,
            factor,
            max,
        } => {
            let builder = ExponentialBuilder::default()
                .with_min_delay(initial)
                .with_factor(factor as f32)
                .with_max_delay(max)
                .with_max_times(retries);
            let builder = if policy.jitter {
                builder.with_jitter()
            } else {
                builder
            };
            Box::new(builder.build())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_delays_grow_and_stop_at_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(100),
                factor: 2.0,
                max: Duration::from_millis(300),
            },
            jitter: false,
        };
        // backon multiplies in f32: compare at millisecond precision.
        let got: Vec<_> = delays(&policy).map(|d| d.as_millis()).collect();
        assert_eq!(got, vec![100, 200, 300, 300]);
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let policy = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::DEFAULT
        };
        assert_eq!(delays(&policy).count(), 0);
    }
}
