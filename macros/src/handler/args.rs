//! The options of `#[async_handler(...)]`.
//!
//! ```text
//! #[async_handler(
//!     name = "billing.notify",                                   // default: module path :: fn name
//!     pool = "billing",                                          // default: the default pool
//!     retry(max_attempts = 5, backoff = exponential(100ms, 2.0, 10s), jitter),
//!     timeout = "5s",
//!     on_failure = dead_letter,                                  // or `log`, `ignore`
//!     rate = "180/s",
//!     dedupe,
//!     ordered,
//!     circuit_breaker(failures = 5, open_for = "30s"),
//!     start_within = "30s",                                      // warn and count a later start
//! )]
//! ```

use crate::attr::{self, one_of, push_error, render, suggest, Options};
use crate::duration;
use proc_macro2::{Span, TokenStream, TokenTree};
use std::time::Duration;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{LitFloat, LitInt, LitStr, Token};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(pool);
    syn::custom_keyword!(retry);
    syn::custom_keyword!(timeout);
    syn::custom_keyword!(on_failure);
    syn::custom_keyword!(rate);
    syn::custom_keyword!(dedupe);
    syn::custom_keyword!(ordered);
    syn::custom_keyword!(circuit_breaker);
    syn::custom_keyword!(start_within);

    syn::custom_keyword!(max_attempts);
    syn::custom_keyword!(backoff);
    syn::custom_keyword!(jitter);
    syn::custom_keyword!(fixed);
    syn::custom_keyword!(exponential);

    syn::custom_keyword!(dead_letter);
    syn::custom_keyword!(log);
    syn::custom_keyword!(ignore);

    syn::custom_keyword!(failures);
    syn::custom_keyword!(open_for);
}

const TEMPLATE: &str = "#[async_handler({})]";
const RETRY_TEMPLATE: &str = "#[async_handler(retry({}))]";
const BREAKER_TEMPLATE: &str = "#[async_handler(circuit_breaker({}))]";

/// Each option with an example of it, in the order the docs list them.
const OPTIONS: &[(&str, &str)] = &[
    ("name", "name = \"billing.notify_customer\""),
    ("pool", "pool = \"billing\""),
    (
        "retry",
        "retry(max_attempts = 5, backoff = exponential(100ms, 2.0, 10s), jitter)",
    ),
    ("timeout", "timeout = \"5s\""),
    ("on_failure", "on_failure = dead_letter"),
    ("rate", "rate = \"100/s\""),
    ("dedupe", "dedupe"),
    ("ordered", "ordered"),
    (
        "circuit_breaker",
        "circuit_breaker(failures = 5, open_for = \"30s\")",
    ),
    ("start_within", "start_within = \"30s\""),
];

/// Words other libraries use for Herald's options.
const OPTION_ALIASES: &[(&str, &str)] = &[
    ("retries", "retry"),
    ("queue", "pool"),
    ("pool_name", "pool"),
    ("deadline", "timeout"),
    ("rate_limit", "rate"),
    ("ratelimit", "rate"),
    ("throttle", "rate"),
    ("idempotent", "dedupe"),
    ("deduplicate", "dedupe"),
    ("on_error", "on_failure"),
    ("sequential", "ordered"),
    ("breaker", "circuit_breaker"),
    ("circuit", "circuit_breaker"),
    ("circuitbreaker", "circuit_breaker"),
    ("start_deadline", "start_within"),
    ("max_queue_delay", "start_within"),
    ("queue_timeout", "start_within"),
    ("sla", "start_within"),
];

const RETRY_OPTIONS: &[(&str, &str)] = &[
    ("max_attempts", "max_attempts = 5"),
    ("backoff", "backoff = exponential(100ms, 2.0, 10s)"),
    ("jitter", "jitter"),
];

const BREAKER_OPTIONS: &[(&str, &str)] = &[
    ("failures", "failures = 5"),
    ("open_for", "open_for = \"30s\""),
];

const BREAKER_ALIASES: &[(&str, &str)] = &[
    ("threshold", "failures"),
    ("failure_threshold", "failures"),
    ("max_failures", "failures"),
    ("consecutive_failures", "failures"),
    ("cooldown", "open_for"),
    ("reset_timeout", "open_for"),
    ("wait", "open_for"),
    ("duration", "open_for"),
];

const RETRY_ALIASES: &[(&str, &str)] = &[
    ("attempts", "max_attempts"),
    ("max_retries", "max_attempts"),
    ("retries", "max_attempts"),
    ("delay", "backoff"),
    ("random", "jitter"),
];

/// The parsed options. `None` and `false` mean "not written": the runtime default applies.
#[derive(Debug, Default)]
pub(crate) struct HandlerArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) pool: Option<LitStr>,
    pub(crate) retry: Option<RetryArgs>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_failure: Option<OnFailure>,
    pub(crate) rate: Option<(u32, Duration)>,
    pub(crate) dedupe: bool,
    /// The span of the `ordered` keyword, where a missing message key is reported.
    pub(crate) ordered: Option<Span>,
    pub(crate) circuit_breaker: Option<BreakerArgs>,
    pub(crate) start_within: Option<Duration>,
}

/// `circuit_breaker(failures = 5, open_for = "30s")`; what is not written takes the runtime's
/// default (`CircuitBreaker::DEFAULT`).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct BreakerArgs {
    pub(crate) failures: Option<u32>,
    pub(crate) open_for: Option<Duration>,
}

/// `retry(max_attempts = 5, backoff = exponential(100ms, 2.0, 10s), jitter)`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RetryArgs {
    pub(crate) max_attempts: Option<u32>,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) jitter: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Backoff {
    Fixed(Duration),
    Exponential {
        initial: Duration,
        factor: f64,
        max: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnFailure {
    DeadLetter,
    Log,
    Ignore,
}

/// One option as written: its key (for "given twice" errors) and its value.
struct Keyed<T> {
    key: &'static str,
    span: Span,
    value: T,
}

enum HandlerOption {
    Name(LitStr),
    Pool(LitStr),
    Retry(RetryArgs),
    Timeout(Duration),
    OnFailure(OnFailure),
    Rate(u32, Duration),
    Dedupe,
    Ordered(Span),
    CircuitBreaker(BreakerArgs),
    StartWithin(Duration),
}

enum BreakerOption {
    Failures(u32),
    OpenFor(Duration),
}

enum RetryOption {
    MaxAttempts(u32),
    Backoff(Backoff),
    Jitter,
}

impl Parse for HandlerArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let options = Options::parse(input, TEMPLATE)?;
        let mut errors = None;
        let parsed = options.parse_each(&mut errors, |index, input| {
            parse_option(&options, index, input)
        });
        let mut args = HandlerArgs::default();
        for (index, Keyed { key, span, value }) in parsed {
            let repeated = match value {
                HandlerOption::Name(name) => args.name.replace(name).is_some(),
                HandlerOption::Pool(pool) => args.pool.replace(pool).is_some(),
                HandlerOption::Retry(retry) => args.retry.replace(retry).is_some(),
                HandlerOption::Timeout(timeout) => args.timeout.replace(timeout).is_some(),
                HandlerOption::OnFailure(on_failure) => {
                    args.on_failure.replace(on_failure).is_some()
                }
                HandlerOption::Rate(count, per) => args.rate.replace((count, per)).is_some(),
                HandlerOption::Dedupe => std::mem::replace(&mut args.dedupe, true),
                HandlerOption::Ordered(span) => args.ordered.replace(span).is_some(),
                HandlerOption::CircuitBreaker(breaker) => {
                    args.circuit_breaker.replace(breaker).is_some()
                }
                HandlerOption::StartWithin(limit) => args.start_within.replace(limit).is_some(),
            };
            if repeated {
                push_error(&mut errors, repeated_error(&options, index, key, span));
            }
        }
        errors.map_or(Ok(args), Err)
    }
}

fn parse_option(
    options: &Options,
    index: usize,
    input: ParseStream<'_>,
) -> syn::Result<Keyed<HandlerOption>> {
    let lookahead = input.lookahead1();
    let keyed = if lookahead.peek(kw::name) {
        let key = input.parse::<kw::name>()?;
        keyed(
            "name",
            key.span,
            HandlerOption::Name(parse_string(input, options, "name", key.span)?),
        )
    } else if lookahead.peek(kw::pool) {
        let key = input.parse::<kw::pool>()?;
        keyed(
            "pool",
            key.span,
            HandlerOption::Pool(parse_string(input, options, "pool", key.span)?),
        )
    } else if lookahead.peek(kw::retry) {
        let key = input.parse::<kw::retry>()?;
        keyed(
            "retry",
            key.span,
            HandlerOption::Retry(parse_retry(input, options)?),
        )
    } else if lookahead.peek(kw::timeout) {
        let key = input.parse::<kw::timeout>()?;
        expect_eq(input, options, "timeout", key.span)?;
        let example = |fix: Option<&str>| {
            let fixed = format!("timeout = {}", fix.unwrap_or("\"5s\""));
            options.corrected(index, Some(&fixed))
        };
        let (timeout, span) = duration::parse_lit(input, example)?;
        if timeout.is_zero() {
            let message = format!(
                "a timeout of zero would fail every attempt, e.g. {}",
                example(None)
            );
            return Err(syn::Error::new(span, message));
        }
        keyed("timeout", key.span, HandlerOption::Timeout(timeout))
    } else if lookahead.peek(kw::on_failure) {
        let key = input.parse::<kw::on_failure>()?;
        expect_eq(input, options, "on_failure", key.span)?;
        keyed(
            "on_failure",
            key.span,
            HandlerOption::OnFailure(parse_on_failure(input, options, index)?),
        )
    } else if lookahead.peek(kw::rate) {
        let key = input.parse::<kw::rate>()?;
        let lit = parse_string(input, options, "rate", key.span)?;
        let (count, per) = duration::parse_rate(&lit.value()).map_err(|invalid| {
            let fixed = format!("rate = \"{}\"", invalid.fix.as_deref().unwrap_or("100/s"));
            let message = format!(
                "{}, e.g. {}",
                invalid.message,
                options.corrected(index, Some(&fixed))
            );
            syn::Error::new(lit.span(), message)
        })?;
        keyed("rate", key.span, HandlerOption::Rate(count, per))
    } else if lookahead.peek(kw::dedupe) {
        let key = input.parse::<kw::dedupe>()?;
        expect_flag(input, options, index, "dedupe")?;
        keyed("dedupe", key.span, HandlerOption::Dedupe)
    } else if lookahead.peek(kw::ordered) {
        let key = input.parse::<kw::ordered>()?;
        expect_flag(input, options, index, "ordered")?;
        keyed("ordered", key.span, HandlerOption::Ordered(key.span))
    } else if lookahead.peek(kw::circuit_breaker) {
        let key = input.parse::<kw::circuit_breaker>()?;
        keyed(
            "circuit_breaker",
            key.span,
            HandlerOption::CircuitBreaker(parse_breaker(input, options)?),
        )
    } else if lookahead.peek(kw::start_within) {
        let key = input.parse::<kw::start_within>()?;
        expect_eq(input, options, "start_within", key.span)?;
        let example = |fix: Option<&str>| {
            let fixed = format!("start_within = {}", fix.unwrap_or("\"30s\""));
            options.corrected(index, Some(&fixed))
        };
        let (limit, span) = duration::parse_lit(input, example)?;
        if limit.is_zero() {
            let message = format!(
                "a `start_within` of zero would call every start late: give the longest wait you accept, e.g. {}",
                example(None)
            );
            return Err(syn::Error::new(span, message));
        }
        keyed("start_within", key.span, HandlerOption::StartWithin(limit))
    } else if input.peek(syn::Ident::peek_any) {
        let groups = [
            ("retry", "a retry option", RETRY_OPTIONS, RETRY_ALIASES),
            (
                "circuit_breaker",
                "a circuit breaker option",
                BREAKER_OPTIONS,
                BREAKER_ALIASES,
            ),
        ];
        for (group, what, known, aliases) in groups {
            if let Some(error) =
                misplaced_option(input, options, index, group, what, known, aliases)
            {
                return Err(error);
            }
        }
        return Err(unknown_key(
            input,
            options,
            index,
            "option",
            OPTIONS,
            OPTION_ALIASES,
        ));
    } else {
        return Err(lookahead.error());
    };
    expect_end(input, keyed.key)?;
    Ok(keyed)
}

fn keyed<T>(key: &'static str, span: Span, value: T) -> Keyed<T> {
    Keyed { key, span, value }
}

fn parse_retry(input: ParseStream<'_>, outer: &Options) -> syn::Result<RetryArgs> {
    if input.is_empty() {
        return Ok(RetryArgs::default());
    }
    if !input.peek(syn::token::Paren) {
        let message = format!(
            "write the retry policy in brackets, e.g. {}",
            outer.example(example_of("retry"))
        );
        return Err(syn::Error::new(input.span(), message));
    }
    let content;
    syn::parenthesized!(content in input);
    let options = Options::parse(&content, RETRY_TEMPLATE)?;
    let mut errors = None;
    let parsed = options.parse_each(&mut errors, |index, input| {
        parse_retry_option(&options, index, input)
    });
    let mut retry = RetryArgs::default();
    for (index, Keyed { key, span, value }) in parsed {
        let repeated = match value {
            RetryOption::MaxAttempts(max) => retry.max_attempts.replace(max).is_some(),
            RetryOption::Backoff(backoff) => retry.backoff.replace(backoff).is_some(),
            RetryOption::Jitter => std::mem::replace(&mut retry.jitter, true),
        };
        if repeated {
            push_error(&mut errors, repeated_error(&options, index, key, span));
        }
    }
    errors.map_or(Ok(retry), Err)
}

fn parse_breaker(input: ParseStream<'_>, outer: &Options) -> syn::Result<BreakerArgs> {
    if input.is_empty() {
        return Ok(BreakerArgs::default());
    }
    if !input.peek(syn::token::Paren) {
        let message = format!(
            "write the circuit breaker's settings in brackets, e.g. {}",
            outer.example(example_of("circuit_breaker"))
        );
        return Err(syn::Error::new(input.span(), message));
    }
    let content;
    syn::parenthesized!(content in input);
    let options = Options::parse(&content, BREAKER_TEMPLATE)?;
    let mut errors = None;
    let parsed = options.parse_each(&mut errors, |index, input| {
        parse_breaker_option(&options, index, input)
    });
    let mut breaker = BreakerArgs::default();
    for (index, Keyed { key, span, value }) in parsed {
        let repeated = match value {
            BreakerOption::Failures(failures) => breaker.failures.replace(failures).is_some(),
            BreakerOption::OpenFor(open_for) => breaker.open_for.replace(open_for).is_some(),
        };
        if repeated {
            push_error(&mut errors, repeated_error(&options, index, key, span));
        }
    }
    errors.map_or(Ok(breaker), Err)
}

fn parse_breaker_option(
    options: &Options,
    index: usize,
    input: ParseStream<'_>,
) -> syn::Result<Keyed<BreakerOption>> {
    let lookahead = input.lookahead1();
    let keyed = if lookahead.peek(kw::failures) {
        let key = input.parse::<kw::failures>()?;
        expect_eq(input, options, "failures", key.span)?;
        let lit: LitInt = input
            .parse()
            .map_err(|e| with_example(e, options, "failures"))?;
        let failures: u32 = lit
            .base10_parse()
            .map_err(|e| with_example(e, options, "failures"))?;
        if failures == 0 {
            let message = format!(
                "`failures` is how many failed attempts in a row open the breaker, so it is at least 1, e.g. {}",
                options.corrected(index, Some("failures = 1"))
            );
            return Err(syn::Error::new(lit.span(), message));
        }
        keyed("failures", key.span, BreakerOption::Failures(failures))
    } else if lookahead.peek(kw::open_for) {
        let key = input.parse::<kw::open_for>()?;
        expect_eq(input, options, "open_for", key.span)?;
        let example = |fix: Option<&str>| {
            let fixed = format!("open_for = {}", fix.unwrap_or("\"30s\""));
            options.corrected(index, Some(&fixed))
        };
        let (open_for, span) = duration::parse_lit(input, example)?;
        if open_for.is_zero() {
            let message = format!(
                "a breaker open for zero time would never hold a call, e.g. {}",
                example(None)
            );
            return Err(syn::Error::new(span, message));
        }
        keyed("open_for", key.span, BreakerOption::OpenFor(open_for))
    } else if input.peek(syn::Ident::peek_any) {
        return Err(unknown_key(
            input,
            options,
            index,
            "circuit breaker option",
            BREAKER_OPTIONS,
            BREAKER_ALIASES,
        ));
    } else {
        return Err(lookahead.error());
    };
    expect_end(input, keyed.key)?;
    Ok(keyed)
}

fn parse_retry_option(
    options: &Options,
    index: usize,
    input: ParseStream<'_>,
) -> syn::Result<Keyed<RetryOption>> {
    let lookahead = input.lookahead1();
    let keyed = if lookahead.peek(kw::max_attempts) {
        let key = input.parse::<kw::max_attempts>()?;
        expect_eq(input, options, "max_attempts", key.span)?;
        let lit: LitInt = input
            .parse()
            .map_err(|e| with_example(e, options, "max_attempts"))?;
        let max: u32 = lit
            .base10_parse()
            .map_err(|e| with_example(e, options, "max_attempts"))?;
        if max == 0 {
            let message = format!(
                "`max_attempts` counts the first attempt too, so it is at least 1 (1 = no retry), e.g. {}",
                options.example("max_attempts = 1")
            );
            return Err(syn::Error::new(lit.span(), message));
        }
        keyed("max_attempts", key.span, RetryOption::MaxAttempts(max))
    } else if lookahead.peek(kw::backoff) {
        let key = input.parse::<kw::backoff>()?;
        expect_eq(input, options, "backoff", key.span)?;
        keyed(
            "backoff",
            key.span,
            RetryOption::Backoff(parse_backoff(input, options)?),
        )
    } else if lookahead.peek(kw::jitter) {
        let key = input.parse::<kw::jitter>()?;
        expect_flag(input, options, index, "jitter")?;
        keyed("jitter", key.span, RetryOption::Jitter)
    } else if input.peek(syn::Ident::peek_any) {
        return Err(unknown_key(
            input,
            options,
            index,
            "retry option",
            RETRY_OPTIONS,
            RETRY_ALIASES,
        ));
    } else {
        return Err(lookahead.error());
    };
    expect_end(input, keyed.key)?;
    Ok(keyed)
}

/// `fixed(1s)` or `exponential(100ms, 2.0, 10s)`.
fn parse_backoff(input: ParseStream<'_>, options: &Options) -> syn::Result<Backoff> {
    let fixed_example = options.example("backoff = fixed(1s)");
    let exponential_example = options.example("backoff = exponential(100ms, 2.0, 10s)");
    let lookahead = input.lookahead1();
    if lookahead.peek(kw::fixed) {
        input.parse::<kw::fixed>()?;
        let content;
        syn::parenthesized!(content in input);
        let example = |fix: Option<&str>| {
            options.example(&format!("backoff = fixed({})", fix.unwrap_or("1s")))
        };
        let (delay, _) = duration::parse_lit(&content, example)?;
        if !content.is_empty() {
            return Err(content.error(format!("`fixed` takes one delay, e.g. {fixed_example}")));
        }
        Ok(Backoff::Fixed(delay))
    } else if lookahead.peek(kw::exponential) {
        input.parse::<kw::exponential>()?;
        let content;
        syn::parenthesized!(content in input);
        let shape =
            || format!("write `exponential(initial, factor, max)`, e.g. {exponential_example}");
        let (initial, initial_span) =
            duration::parse_lit(&content, |_| exponential_example.clone())?;
        content
            .parse::<Token![,]>()
            .map_err(|e| syn::Error::new(e.span(), shape()))?;
        let (factor, factor_span) =
            parse_factor(&content).map_err(|e| syn::Error::new(e.span(), shape()))?;
        content
            .parse::<Token![,]>()
            .map_err(|e| syn::Error::new(e.span(), shape()))?;
        let (max, _) = duration::parse_lit(&content, |_| exponential_example.clone())?;
        content.parse::<Option<Token![,]>>()?;
        if !content.is_empty() {
            return Err(content.error(shape()));
        }
        if !(factor.is_finite() && factor >= 1.0) {
            let message = format!("the factor multiplies each delay, so it is at least 1.0, e.g. {exponential_example}");
            return Err(syn::Error::new(factor_span, message));
        }
        if initial > max {
            let message = format!("the first delay is longer than the largest one (the last argument), e.g. {exponential_example}");
            return Err(syn::Error::new(initial_span, message));
        }
        Ok(Backoff::Exponential {
            initial,
            factor,
            max,
        })
    } else if input.peek(syn::Ident::peek_any) {
        let word = attr::parse_key(input)?;
        let hint = match suggest(
            &word.to_string(),
            &["fixed", "exponential"],
            &[("constant", "fixed"), ("linear", "fixed")],
        ) {
            Some(kind) => format!("did you mean `{kind}`? "),
            None => String::new(),
        };
        let message = format!(
            "unknown backoff `{word}`; {hint}write {fixed_example} or {exponential_example}"
        );
        Err(syn::Error::new(word.span(), message))
    } else {
        Err(lookahead.error())
    }
}

/// `2.0` or `2`.
fn parse_factor(input: ParseStream<'_>) -> syn::Result<(f64, Span)> {
    if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        Ok((lit.base10_parse()?, lit.span()))
    } else {
        let lit: LitFloat = input.parse()?;
        Ok((lit.base10_parse()?, lit.span()))
    }
}

fn parse_on_failure(
    input: ParseStream<'_>,
    options: &Options,
    index: usize,
) -> syn::Result<OnFailure> {
    const CHOICES: [&str; 3] = ["dead_letter", "log", "ignore"];
    let lookahead = input.lookahead1();
    if lookahead.peek(kw::dead_letter) {
        input.parse::<kw::dead_letter>()?;
        Ok(OnFailure::DeadLetter)
    } else if lookahead.peek(kw::log) {
        input.parse::<kw::log>()?;
        Ok(OnFailure::Log)
    } else if lookahead.peek(kw::ignore) {
        input.parse::<kw::ignore>()?;
        Ok(OnFailure::Ignore)
    } else if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        let value = lit.value();
        let choice = if CHOICES.contains(&value.as_str()) {
            value
        } else {
            "dead_letter".to_owned()
        };
        let message = format!(
            "write the choice without quotes, e.g. {}",
            options.corrected(index, Some(&format!("on_failure = {choice}")))
        );
        Err(syn::Error::new(lit.span(), message))
    } else if input.peek(syn::Ident::peek_any) {
        let word = attr::parse_key(input)?;
        let aliases = [
            ("dlq", "dead_letter"),
            ("deadletter", "dead_letter"),
            ("drop", "ignore"),
            ("skip", "ignore"),
        ];
        let message = match suggest(&word.to_string(), &CHOICES, &aliases) {
            Some(choice) => format!(
                "unknown failure handling `{word}`; did you mean `{choice}`? e.g. {}",
                options.corrected(index, Some(&format!("on_failure = {choice}")))
            ),
            None => format!(
                "unknown failure handling `{word}`: choose {}, e.g. {}",
                one_of(&CHOICES),
                options.corrected(index, Some("on_failure = dead_letter"))
            ),
        };
        Err(syn::Error::new(word.span(), message))
    } else {
        Err(lookahead.error())
    }
}

/// `= "..."`, not empty.
fn parse_string(
    input: ParseStream<'_>,
    options: &Options,
    key: &str,
    span: Span,
) -> syn::Result<LitStr> {
    expect_eq(input, options, key, span)?;
    let lit: LitStr = input.parse().map_err(|e| with_example(e, options, key))?;
    if lit.value().trim().is_empty() {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "`{key}` is empty, e.g. {}",
                options.example(example_of(key))
            ),
        ));
    }
    Ok(lit)
}

/// `= value`; a missing value is reported at the key (the end of the input has no span of its own).
fn expect_eq(input: ParseStream<'_>, options: &Options, key: &str, span: Span) -> syn::Result<()> {
    let missing = || {
        syn::Error::new(
            span,
            format!(
                "`{key}` needs a value, e.g. {}",
                options.example(example_of(key))
            ),
        )
    };
    if input.is_empty() {
        return Err(missing());
    }
    input
        .parse::<Token![=]>()
        .map_err(|e| with_example(e, options, key))?;
    if input.is_empty() {
        return Err(missing());
    }
    Ok(())
}

/// A flag such as `dedupe` takes no value.
fn expect_flag(
    input: ParseStream<'_>,
    options: &Options,
    index: usize,
    key: &str,
) -> syn::Result<()> {
    if input.is_empty() {
        return Ok(());
    }
    let message = format!(
        "`{key}` is a flag and takes no value: {}",
        options.corrected(index, Some(key))
    );
    Err(input.error(message))
}

fn expect_end(input: ParseStream<'_>, key: &str) -> syn::Result<()> {
    if input.is_empty() {
        return Ok(());
    }
    Err(input.error(format!(
        "unexpected tokens after `{key}`; separate options with `,`"
    )))
}

/// "unknown option `retires`; did you mean `retry`? e.g. #[async_handler(retry(max_attempts = 5))]".
fn unknown_key(
    input: ParseStream<'_>,
    options: &Options,
    index: usize,
    what: &str,
    known: &[(&str, &str)],
    aliases: &[(&str, &'static str)],
) -> syn::Error {
    let key = match attr::parse_key(input) {
        Ok(key) => key,
        Err(error) => return error,
    };
    let rest: TokenStream = input.parse().unwrap_or_default();
    let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
    let message = match suggest(&key.to_string(), &names, aliases) {
        Some(name) => {
            let example = known
                .iter()
                .find(|(known, _)| *known == name)
                .map_or(name, |(_, example)| *example);
            let fixed = rename(name, example, &rest);
            format!(
                "unknown {what} `{key}`; did you mean `{name}`? e.g. {}",
                options.corrected(index, Some(&fixed))
            )
        }
        None => format!(
            "unknown {what} `{key}`: the {what}s are {}, e.g. {}",
            one_of(&names),
            options.example(known[0].1)
        ),
    };
    syn::Error::new(key.span(), message)
}

/// `name` followed by what the user wrote after the misspelt key, when it has the shape `name`
/// expects (`= value`, `(...)` or nothing); otherwise the example of `name`.
fn rename(name: &str, example: &str, rest: &TokenStream) -> String {
    let takes_value = example.starts_with(&format!("{name} ="));
    let takes_group = example.starts_with(&format!("{name}("));
    match rest.clone().into_iter().next() {
        None if !takes_value && !takes_group => name.to_owned(),
        Some(TokenTree::Punct(p)) if p.as_char() == '=' && takes_value => {
            format!("{name} {}", render(rest))
        }
        Some(TokenTree::Group(_)) if takes_group => format!("{name}{}", render(rest)),
        _ => example.to_owned(),
    }
}

/// `max_attempts = 5` written outside `retry(...)`: the fix is `retry(max_attempts = 5)`; the
/// same for the options of `circuit_breaker(...)`.
fn misplaced_option(
    input: ParseStream<'_>,
    options: &Options,
    index: usize,
    group: &str,
    what: &str,
    known: &[(&str, &str)],
    aliases: &[(&str, &str)],
) -> Option<syn::Error> {
    let fork = input.fork();
    let key = attr::parse_key(&fork).ok()?.to_string();
    let name = known
        .iter()
        .map(|(name, _)| *name)
        .find(|name| *name == key)
        .or_else(|| {
            aliases
                .iter()
                .find(|(from, _)| *from == key)
                .map(|(_, to)| *to)
        })?;
    let key = attr::parse_key(input).ok()?;
    let rest: TokenStream = input.parse().unwrap_or_default();
    let example = known
        .iter()
        .find(|(known, _)| *known == name)
        .map_or(name, |(_, example)| *example);
    let fixed = format!("{group}({})", rename(name, example, &rest));
    let message = format!(
        "`{key}` is {what}: write it inside `{group}(...)`, e.g. {}",
        options.corrected(index, Some(&fixed))
    );
    Some(syn::Error::new(key.span(), message))
}

fn repeated_error(options: &Options, index: usize, key: &str, span: Span) -> syn::Error {
    let message = format!(
        "`{key}` is given twice; keep one: {}",
        options.corrected(index, None)
    );
    syn::Error::new(span, message)
}

fn example_of(key: &str) -> &'static str {
    OPTIONS
        .iter()
        .chain(RETRY_OPTIONS)
        .chain(BREAKER_OPTIONS)
        .find(|(name, _)| *name == key)
        .map_or("", |(_, example)| example)
}

/// Adds the option's example to a parse error of its value.
fn with_example(error: syn::Error, options: &Options, key: &str) -> syn::Error {
    let example = options.example(example_of(key));
    syn::Error::new(error.span(), format!("{error}, e.g. {example}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: TokenStream) -> syn::Result<HandlerArgs> {
        syn::parse2(tokens)
    }

    fn errors(tokens: TokenStream) -> Vec<String> {
        parse(tokens)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn no_options_means_every_default() {
        let args = parse(quote!()).unwrap();
        assert!(
            args.name.is_none()
                && args.pool.is_none()
                && args.retry.is_none()
                && args.timeout.is_none()
        );
        assert!(
            args.on_failure.is_none()
                && args.rate.is_none()
                && !args.dedupe
                && args.ordered.is_none()
        );
    }

    #[test]
    fn parses_every_option() {
        let args = parse(quote!(
            name = "billing.notify",
            pool = "billing",
            retry(
                max_attempts = 5,
                backoff = exponential(100ms, 2.0, 10s),
                jitter
            ),
            timeout = "1.5s",
            on_failure = log,
            rate = "180/s",
            dedupe,
            ordered,
        ))
        .unwrap();
        assert_eq!(args.name.unwrap().value(), "billing.notify");
        assert_eq!(args.pool.unwrap().value(), "billing");
        let backoff = Backoff::Exponential {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(10),
        };
        assert_eq!(
            args.retry,
            Some(RetryArgs {
                max_attempts: Some(5),
                backoff: Some(backoff),
                jitter: true
            })
        );
        assert_eq!(args.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(args.on_failure, Some(OnFailure::Log));
        assert_eq!(args.rate, Some((180, Duration::from_secs(1))));
        assert!(args.dedupe);
        assert!(args.ordered.is_some());
    }

    #[test]
    fn retry_sub_options_are_optional() {
        let args = parse(quote!(retry(backoff = fixed(1s)))).unwrap();
        let expected = RetryArgs {
            max_attempts: None,
            backoff: Some(Backoff::Fixed(Duration::from_secs(1))),
            jitter: false,
        };
        assert_eq!(args.retry, Some(expected));
        assert_eq!(
            parse(quote!(retry())).unwrap().retry,
            Some(RetryArgs::default())
        );
        let args = parse(quote!(retry(backoff = exponential(1s, 2, 1m)))).unwrap();
        assert!(
            matches!(args.retry.unwrap().backoff, Some(Backoff::Exponential { factor, .. }) if factor == 2.0)
        );
    }

    #[test]
    fn circuit_breaker_settings_are_optional() {
        let args = parse(quote!(circuit_breaker(failures = 3, open_for = "10s"))).unwrap();
        assert_eq!(
            args.circuit_breaker,
            Some(BreakerArgs {
                failures: Some(3),
                open_for: Some(Duration::from_secs(10))
            })
        );
        let args = parse(quote!(circuit_breaker(open_for = 2m))).unwrap();
        assert_eq!(
            args.circuit_breaker,
            Some(BreakerArgs {
                failures: None,
                open_for: Some(Duration::from_secs(120))
            })
        );
        assert_eq!(
            parse(quote!(circuit_breaker)).unwrap().circuit_breaker,
            Some(BreakerArgs::default())
        );
        assert!(parse(quote!(dedupe)).unwrap().circuit_breaker.is_none());
    }

    #[test]
    fn circuit_breaker_mistakes_name_the_fix() {
        assert_eq!(
            errors(quote!(circuit_breaker(failures = 0))),
            ["`failures` is how many failed attempts in a row open the breaker, so it is at least 1, e.g. #[async_handler(circuit_breaker(failures = 1))]"]
        );
        assert_eq!(
            errors(quote!(circuit_breaker(open_for = "0s"))),
            [
                r#"a breaker open for zero time would never hold a call, e.g. #[async_handler(circuit_breaker(open_for = "30s"))]"#
            ]
        );
        assert_eq!(
            errors(quote!(circuit_breaker(threshold = 5))),
            ["unknown circuit breaker option `threshold`; did you mean `failures`? e.g. #[async_handler(circuit_breaker(failures = 5))]"]
        );
        assert_eq!(
            errors(quote!(dedupe, open_for = "1m")),
            [
                r#"`open_for` is a circuit breaker option: write it inside `circuit_breaker(...)`, e.g. #[async_handler(dedupe, circuit_breaker(open_for = "1m"))]"#
            ]
        );
        assert_eq!(
            errors(quote!(breaker(failures = 5))),
            ["unknown option `breaker`; did you mean `circuit_breaker`? e.g. #[async_handler(circuit_breaker(failures = 5))]"]
        );
        assert_eq!(
            errors(quote!(circuit_breaker(failures = 2, failures = 3))),
            ["`failures` is given twice; keep one: #[async_handler(circuit_breaker(failures = 2))]"]
        );
        assert!(errors(quote!(circuit_breaker = 5))[0].contains("in brackets"));
        assert!(errors(quote!(circuit_breaker(open_for = "5 seconds")))[0]
            .contains(r#"e.g. #[async_handler(circuit_breaker(open_for = "5s"))]"#));
    }

    #[test]
    fn on_failure_choices() {
        for (tokens, expected) in [
            (quote!(on_failure = dead_letter), OnFailure::DeadLetter),
            (quote!(on_failure = log), OnFailure::Log),
            (quote!(on_failure = ignore), OnFailure::Ignore),
        ] {
            assert_eq!(parse(tokens).unwrap().on_failure, Some(expected));
        }
    }

    #[test]
    fn unknown_option_suggests_the_corrected_attribute() {
        assert_eq!(
            errors(quote!(timeout = "5s", retires(max_attempts = 5))),
            [
                r#"unknown option `retires`; did you mean `retry`? e.g. #[async_handler(timeout = "5s", retry(max_attempts = 5))]"#
            ]
        );
        assert_eq!(
            errors(quote!(dedup)),
            ["unknown option `dedup`; did you mean `dedupe`? e.g. #[async_handler(dedupe)]"]
        );
        assert_eq!(
            errors(quote!(max_retries = 5)),
            ["`max_retries` is a retry option: write it inside `retry(...)`, e.g. #[async_handler(retry(max_attempts = 5))]"]
        );
        assert_eq!(
            errors(quote!(dedupe, jitter)),
            ["`jitter` is a retry option: write it inside `retry(...)`, e.g. #[async_handler(dedupe, retry(jitter))]"]
        );
        assert_eq!(
            errors(quote!(retry(max_attempt = 2))),
            ["unknown retry option `max_attempt`; did you mean `max_attempts`? e.g. #[async_handler(retry(max_attempts = 2))]"]
        );
        let unknown = errors(quote!(colour = "red"));
        assert!(
            unknown[0]
                .starts_with("unknown option `colour`: the options are `name`, `pool`, `retry`"),
            "{unknown:?}"
        );
    }

    #[test]
    fn repeated_option_shows_the_attribute_without_it() {
        assert_eq!(
            errors(quote!(timeout = "5s", dedupe, timeout = "10s")),
            [r#"`timeout` is given twice; keep one: #[async_handler(timeout = "5s", dedupe)]"#]
        );
        assert_eq!(
            errors(quote!(retry(jitter, jitter))),
            ["`jitter` is given twice; keep one: #[async_handler(retry(jitter))]"]
        );
    }

    #[test]
    fn bad_durations_and_rates_show_the_fix_when_there_is_one() {
        assert_eq!(
            errors(quote!(dedupe, timeout = "5 seconds")),
            [
                r#"unknown unit `seconds` in `5 seconds`: use `ns`, `us`, `ms`, `s`, `m` or `h`, e.g. #[async_handler(dedupe, timeout = "5s")]"#
            ]
        );
        assert_eq!(
            errors(quote!(rate = "180 per second")),
            [
                r#"`180 per second` is not a rate: write a number of attempts, `/` and a unit (`ns`, `us`, `ms`, `s`, `m` or `h`), e.g. #[async_handler(rate = "180/s")]"#
            ]
        );
        assert_eq!(
            errors(quote!(retry(backoff = fixed(2secs)))),
            ["unknown unit `secs` in `2secs`: use `ns`, `us`, `ms`, `s`, `m` or `h`, e.g. #[async_handler(retry(backoff = fixed(2s)))]"]
        );
    }

    #[test]
    fn start_within_takes_a_duration_above_zero() {
        let args = parse(quote!(start_within = "30s", timeout = "5s")).unwrap();
        assert_eq!(args.start_within, Some(Duration::from_secs(30)));
        assert_eq!(
            parse(quote!(start_within = 250ms)).unwrap().start_within,
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            errors(quote!(dedupe, start_within = "0s")),
            [
                r#"a `start_within` of zero would call every start late: give the longest wait you accept, e.g. #[async_handler(dedupe, start_within = "30s")]"#
            ]
        );
        assert_eq!(
            errors(quote!(start_within = "half a minute")),
            [
                r#"`half a minute` is not a duration: write a number and a unit (`ns`, `us`, `ms`, `s`, `m` or `h`), e.g. #[async_handler(start_within = "30s")]"#
            ]
        );
        assert_eq!(
            errors(quote!(start_within = "1s", start_within = "2s")),
            [r#"`start_within` is given twice; keep one: #[async_handler(start_within = "1s")]"#]
        );
        assert!(errors(quote!(max_queue_delay = "30s"))[0].contains("did you mean `start_within`?"));
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let errors = errors(quote!(
            timout = "5s",
            rate = "fast",
            retry(max_attempts = 0),
            dedupe,
            dedupe
        ));
        assert_eq!(errors.len(), 4, "{errors:?}");
    }

    #[test]
    fn bad_values_name_the_fix() {
        let error = |tokens| errors(tokens).join("\n");
        assert!(error(quote!(timeout = "5 seconds"))
            .contains(r#"unknown unit `seconds` in `5 seconds`"#));
        assert!(error(quote!(timeout = "0s")).contains("zero"));
        assert!(error(quote!(timeout)).contains(r#"e.g. #[async_handler(timeout = "5s")]"#));
        assert!(error(quote!(rate = "180")).contains("not a rate"));
        assert!(error(quote!(rate = 180)).contains(r#"e.g. #[async_handler(rate = "100/s")]"#));
        assert!(error(quote!(retry(max_attempts = 0))).contains("at least 1"));
        assert!(
            error(quote!(retry(backoff = exponential(100ms, 0.5, 10s)))).contains("at least 1.0")
        );
        assert!(error(quote!(retry(backoff = exponential(1m, 2.0, 10s))))
            .contains("longer than the largest"));
        assert!(error(quote!(retry(backoff = exponential(100ms))))
            .contains("exponential(initial, factor, max)"));
        assert!(error(quote!(retry(backoff = constant(1s)))).contains("did you mean `fixed`?"));
        assert!(error(quote!(retry(backoff = fixed(1)))).contains("has no unit"));
        assert!(error(quote!(on_failure = dlq)).contains("did you mean `dead_letter`?"));
        assert!(
            error(quote!(on_failure = "log")).contains("e.g. #[async_handler(on_failure = log)]")
        );
        assert!(error(quote!(dedupe = true))
            .contains("`dedupe` is a flag and takes no value: #[async_handler(dedupe)]"));
        assert!(error(quote!(name = "")).contains("`name` is empty"));
        assert!(error(quote!(pool = "a" "b")).contains("separate options with `,`"));
        assert!(error(quote!(retry = 5)).contains("in brackets"));
    }
}
