//! Durations and rates written in attributes, parsed at compile time: `100ms`, `"1.5s"`, `"180/s"`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::quote;
use std::time::Duration;
use syn::parse::ParseStream;
use syn::Lit;

/// The units a duration may be written in, with their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

const UNIT_NAMES: &str = "`ns`, `us`, `ms`, `s`, `m` or `h`";

/// Units people write that mean one of [`UNITS`].
const UNIT_ALIASES: &[(&str, &str)] = &[
    ("nanos", "ns"),
    ("nanosecond", "ns"),
    ("nanoseconds", "ns"),
    ("µs", "us"),
    ("micros", "us"),
    ("microsecond", "us"),
    ("microseconds", "us"),
    ("millis", "ms"),
    ("msec", "ms"),
    ("millisecond", "ms"),
    ("milliseconds", "ms"),
    ("sec", "s"),
    ("secs", "s"),
    ("second", "s"),
    ("seconds", "s"),
    ("min", "m"),
    ("mins", "m"),
    ("minute", "m"),
    ("minutes", "m"),
    ("hr", "h"),
    ("hrs", "h"),
    ("hour", "h"),
    ("hours", "h"),
];

/// Why a duration or rate was rejected, and the corrected text when there is an obvious one
/// (`5 seconds` → `5s`).
#[derive(Debug, PartialEq)]
pub(crate) struct Invalid {
    pub(crate) message: String,
    pub(crate) fix: Option<String>,
}

impl Invalid {
    fn new(message: String) -> Self {
        Invalid { message, fix: None }
    }
}

/// Parses a duration written as a number and a unit: `100ms`, `1.5s`, `2m`.
pub(crate) fn parse(text: &str) -> Result<Duration, Invalid> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim());
    if number.is_empty() {
        return Err(Invalid::new(format!(
            "`{text}` is not a duration: write a number and a unit ({UNIT_NAMES})"
        )));
    }
    let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        if unit.is_empty() {
            return Err(Invalid::new(format!(
                "`{text}` has no unit: add one of {UNIT_NAMES}"
            )));
        }
        let alias = UNIT_ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(unit));
        let fix = alias
            .map(|(_, unit)| format!("{number}{unit}"))
            .filter(|fix| parse(fix).is_ok());
        let message = format!("unknown unit `{unit}` in `{text}`: use {UNIT_NAMES}");
        return Err(Invalid { message, fix });
    };
    let number = number.replace('_', "");
    let (whole, fraction) = number.split_once('.').unwrap_or((&number, ""));
    let not_a_number = || {
        Invalid::new(format!(
            "`{text}` is not a duration: write a number and a unit ({UNIT_NAMES})"
        ))
    };
    let too_long = || Invalid::new(format!("`{text}` is too long"));
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| not_a_number())?
    };
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_long)?;
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().map_err(|_| not_a_number())?;
        let scale = 10u128
            .checked_pow(fraction.len() as u32)
            .ok_or_else(not_a_number)?;
        if !(digits * unit_nanos).is_multiple_of(scale) {
            return Err(Invalid::new(format!(
                "`{text}` is more precise than a nanosecond"
            )));
        }
        nanos += digits * unit_nanos / scale;
    }
    let nanos = u64::try_from(nanos).map_err(|_| too_long())?;
    Ok(Duration::from_nanos(nanos))
}

/// Parses a duration literal token (`100ms`, `1.5s`) or string (`"100ms"`). On error, the message
/// ends with `example(fix)`, where `fix` is the corrected literal as the user would write it.
pub(crate) fn parse_lit(
    input: ParseStream<'_>,
    example: impl Fn(Option<&str>) -> String,
) -> syn::Result<(Duration, Span)> {
    let expected = |span| {
        syn::Error::new(
            span,
            format!(
                "expected a duration such as `100ms`, e.g. {}",
                example(None)
            ),
        )
    };
    let lit: Lit = input.parse().map_err(|e| expected(e.span()))?;
    let (text, quoted) = match &lit {
        Lit::Int(int) => (format!("{}{}", int.base10_digits(), int.suffix()), false),
        Lit::Float(float) => (
            format!("{}{}", float.base10_digits(), float.suffix()),
            false,
        ),
        Lit::Str(string) => (string.value(), true),
        _ => return Err(expected(lit.span())),
    };
    parse(&text)
        .map(|duration| (duration, lit.span()))
        .map_err(|invalid| {
            let fix = invalid
                .fix
                .map(|fix| if quoted { format!("\"{fix}\"") } else { fix });
            syn::Error::new(
                lit.span(),
                format!("{}, e.g. {}", invalid.message, example(fix.as_deref())),
            )
        })
}

/// Parses a rate string: `"180/s"`, `"5/ms"`, `"1000/m"`, `"10/5s"`.
pub(crate) fn parse_rate(text: &str) -> Result<(u32, Duration), Invalid> {
    let Some((count, per)) = text.split_once('/') else {
        // `180 per second`, `180 per s`
        let fix = text.split_once(" per ").and_then(|(count, per)| {
            let per = UNIT_ALIASES
                .iter()
                .find(|(alias, _)| alias.eq_ignore_ascii_case(per.trim()))
                .map_or(per.trim(), |(_, unit)| unit);
            let fix = format!("{}/{per}", count.trim());
            parse_rate(&fix).is_ok().then_some(fix)
        });
        let message = format!(
            "`{text}` is not a rate: write a number of attempts, `/` and a unit ({UNIT_NAMES})"
        );
        return Err(Invalid { message, fix });
    };
    let (count, per) = (count.trim(), per.trim());
    let count: u32 = count
        .parse()
        .map_err(|_| Invalid::new(format!("`{count}` is not a number of attempts")))?;
    if count == 0 {
        let message = "a rate of 0 would never run the handler".to_owned();
        return Err(Invalid {
            message,
            fix: Some(format!("1/{per}")),
        });
    }
    let starts_with_number = per.starts_with(|c: char| c.is_ascii_digit());
    let period = if starts_with_number {
        parse(per)
    } else {
        parse(&format!("1{per}"))
    };
    let period = period.map_err(|invalid| {
        let fix = invalid.fix.map(|fix| {
            if starts_with_number {
                format!("{count}/{fix}")
            } else {
                format!("{count}/{}", &fix[1..])
            }
        });
        Invalid {
            message: format!("invalid period in rate `{text}`: {}", invalid.message),
            fix,
        }
    })?;
    if period.is_zero() {
        return Err(Invalid::new(format!("the period of rate `{text}` is zero")));
    }
    Ok((count, period))
}

/// `::herald::__private::Duration::from_millis(100)`, in the largest unit that is exact.
pub(crate) fn to_tokens(duration: Duration) -> TokenStream {
    let nanos = duration.as_nanos() as u64;
    let (constructor, amount) = if nanos.is_multiple_of(1_000_000_000) {
        ("from_secs", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        ("from_millis", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        ("from_micros", nanos / 1_000)
    } else {
        ("from_nanos", nanos)
    };
    let constructor = Ident::new(constructor, Span::call_site());
    let amount = Literal::u64_unsuffixed(amount);
    quote!(::herald::__private::Duration::#constructor(#amount))
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse::Parser;

    #[test]
    fn parses_numbers_and_units() {
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse(" 10 s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1_000ms"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        let message = |text| parse(text).unwrap_err().message;
        assert!(message("5").contains("has no unit"));
        assert!(message("s").contains("not a duration"));
        assert!(message("1.2.3s").contains("not a duration"));
        assert!(message("0.5ns").contains("more precise"));
        assert!(message("99999999999999h").contains("too long"));
        let unknown = parse("5 seconds").unwrap_err();
        assert!(unknown.message.contains("unknown unit `seconds`"));
        assert_eq!(unknown.fix.as_deref(), Some("5s"));
        assert_eq!(parse("5 fortnights").unwrap_err().fix, None);
    }

    #[test]
    fn parses_literal_tokens_and_strings() {
        let example = |fix: Option<&str>| format!("#[x(timeout = {})]", fix.unwrap_or("\"5s\""));
        let parse = |tokens: proc_macro2::TokenStream| {
            (|input: ParseStream<'_>| parse_lit(input, example))
                .parse2(tokens)
                .map(|(d, _)| d)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse(quote!(100ms)), Ok(Duration::from_millis(100)));
        assert_eq!(parse(quote!(1.5s)), Ok(Duration::from_millis(1500)));
        assert_eq!(parse(quote!("2s")), Ok(Duration::from_secs(2)));
        assert_eq!(parse(quote!(100)).unwrap_err(), "`100` has no unit: add one of `ns`, `us`, `ms`, `s`, `m` or `h`, e.g. #[x(timeout = \"5s\")]");
        assert!(parse(quote!("5 secs"))
            .unwrap_err()
            .ends_with("e.g. #[x(timeout = \"5s\")]"));
        assert!(parse(quote!(5secs))
            .unwrap_err()
            .ends_with("e.g. #[x(timeout = 5s)]"));
        assert!(parse(quote!(true))
            .unwrap_err()
            .starts_with("expected a duration"));
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_rate("180/s"), Ok((180, Duration::from_secs(1))));
        assert_eq!(parse_rate("5/ms"), Ok((5, Duration::from_millis(1))));
        assert_eq!(parse_rate("1000 / m"), Ok((1000, Duration::from_secs(60))));
        assert_eq!(parse_rate("10/5s"), Ok((10, Duration::from_secs(5))));
        assert_eq!(parse_rate("0/s").unwrap_err().fix.as_deref(), Some("1/s"));
        assert!(parse_rate("180")
            .unwrap_err()
            .message
            .contains("not a rate"));
        assert_eq!(
            parse_rate("180 per second").unwrap_err().fix.as_deref(),
            Some("180/s")
        );
        assert_eq!(
            parse_rate("180/sec").unwrap_err().fix.as_deref(),
            Some("180/s")
        );
        assert_eq!(
            parse_rate("180/2 secs").unwrap_err().fix.as_deref(),
            Some("180/2s")
        );
        assert!(parse_rate("many/s")
            .unwrap_err()
            .message
            .contains("not a number"));
        assert!(parse_rate("180/fortnight")
            .unwrap_err()
            .message
            .contains("unknown unit"));
    }

    #[test]
    fn prints_the_largest_exact_unit() {
        let print = |duration| to_tokens(duration).to_string().replace(' ', "");
        assert_eq!(
            print(Duration::from_secs(10)),
            "::herald::__private::Duration::from_secs(10)"
        );
        assert_eq!(
            print(Duration::from_millis(1500)),
            "::herald::__private::Duration::from_millis(1500)"
        );
        assert_eq!(
            print(Duration::from_micros(3)),
            "::herald::__private::Duration::from_micros(3)"
        );
        assert_eq!(
            print(Duration::from_nanos(3)),
            "::herald::__private::Duration::from_nanos(3)"
        );
    }
}
