//! Durations and rates written in attributes, parsed at compile time: `100ms`, `"1.5s"`, `"180/s"`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::quote;
use std::time::Duration;
use syn::parse::ParseStream;
use syn::{Lit, LitStr};

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

/// Parses a duration written as a number and a unit: `100ms`, `1.5s`, `2m`.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim());
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration: write a number and a unit ({UNIT_NAMES}), e.g. `5s`"
        ));
    }
    let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(if unit.is_empty() {
            format!("`{text}` has no unit: add one of {UNIT_NAMES}, e.g. `{number}s`")
        } else {
            format!("unknown unit `{unit}` in `{text}`: use {UNIT_NAMES}, e.g. `{number}s`")
        });
    };
    let number = number.replace('_', "");
    let (whole, fraction) = number.split_once('.').unwrap_or((&number, ""));
    let not_a_number =
        || format!("`{text}` is not a duration: write a number and a unit, e.g. `1.5s`");
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| not_a_number())?
    };
    let mut nanos = whole
        .checked_mul(unit_nanos)
        .ok_or_else(|| format!("`{text}` is too long"))?;
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().map_err(|_| not_a_number())?;
        let scale = 10u128
            .checked_pow(fraction.len() as u32)
            .ok_or_else(not_a_number)?;
        if digits * unit_nanos % scale != 0 {
            return Err(format!("`{text}` is more precise than a nanosecond"));
        }
        nanos += digits * unit_nanos / scale;
    }
    let nanos = u64::try_from(nanos).map_err(|_| format!("`{text}` is too long"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Parses a duration literal token (`100ms`, `1.5s`) or string (`"100ms"`).
pub(crate) fn parse_lit(input: ParseStream<'_>) -> syn::Result<(Duration, Span)> {
    let lit: Lit = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), "expected a duration such as `100ms`"))?;
    let text = match &lit {
        Lit::Int(int) => format!("{}{}", int.base10_digits(), int.suffix()),
        Lit::Float(float) => format!("{}{}", float.base10_digits(), float.suffix()),
        Lit::Str(string) => string.value(),
        _ => {
            return Err(syn::Error::new(
                lit.span(),
                "expected a duration such as `100ms`",
            ))
        }
    };
    parse(&text)
        .map(|duration| (duration, lit.span()))
        .map_err(|message| syn::Error::new(lit.span(), message))
}

/// Parses a rate string: `"180/s"`, `"5/ms"`, `"1000/m"`, `"10/5s"`.
pub(crate) fn parse_rate(lit: &LitStr) -> syn::Result<(u32, Duration)> {
    let text = lit.value();
    let error = |message: String| syn::Error::new(lit.span(), message);
    let Some((count, per)) = text.split_once('/') else {
        return Err(error(format!(
            "`{text}` is not a rate: write attempts per unit, e.g. `\"180/s\"`"
        )));
    };
    let count: u32 = count.trim().parse().map_err(|_| {
        error(format!(
            "`{}` is not a number of attempts: write e.g. `\"180/s\"`",
            count.trim()
        ))
    })?;
    if count == 0 {
        return Err(error(format!(
            "a rate of 0 would never run the handler: write at least `\"1/{}\"`",
            per.trim()
        )));
    }
    let per = per.trim();
    let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
        parse(per)
    } else {
        parse(&format!("1{per}"))
    };
    let per =
        per.map_err(|message| error(format!("invalid period in rate `{text}`: {message}")))?;
    if per.is_zero() {
        return Err(error(format!("the period of rate `{text}` is zero")));
    }
    Ok((count, per))
}

/// `::herald::__private::Duration::from_millis(100)`, in the largest unit that is exact.
pub(crate) fn to_tokens(duration: Duration) -> TokenStream {
    let nanos = duration.as_nanos() as u64;
    let (constructor, amount) = if nanos % 1_000_000_000 == 0 {
        ("from_secs", nanos / 1_000_000_000)
    } else if nanos % 1_000_000 == 0 {
        ("from_millis", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
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
        assert!(parse("5").unwrap_err().contains("has no unit"));
        assert!(parse("5 seconds")
            .unwrap_err()
            .contains("unknown unit `seconds`"));
        assert!(parse("s").unwrap_err().contains("not a duration"));
        assert!(parse("1.2.3s").is_err());
        assert!(parse("0.5ns").unwrap_err().contains("more precise"));
        assert!(parse("99999999999999h").unwrap_err().contains("too long"));
    }

    #[test]
    fn parses_literal_tokens_and_strings() {
        let parse = |tokens: proc_macro2::TokenStream| parse_lit.parse2(tokens).map(|(d, _)| d);
        assert_eq!(parse(quote!(100ms)).unwrap(), Duration::from_millis(100));
        assert_eq!(parse(quote!(1.5s)).unwrap(), Duration::from_millis(1500));
        assert_eq!(parse(quote!("2s")).unwrap(), Duration::from_secs(2));
        assert!(parse(quote!(100))
            .unwrap_err()
            .to_string()
            .contains("has no unit"));
        assert!(parse(quote!(true)).is_err());
    }

    #[test]
    fn parses_rates() {
        let rate = |text: &str| {
            parse_rate(&LitStr::new(text, Span::call_site())).map_err(|e| e.to_string())
        };
        assert_eq!(rate("180/s"), Ok((180, Duration::from_secs(1))));
        assert_eq!(rate("5/ms"), Ok((5, Duration::from_millis(1))));
        assert_eq!(rate("1000 / m"), Ok((1000, Duration::from_secs(60))));
        assert_eq!(rate("10/5s"), Ok((10, Duration::from_secs(5))));
        assert!(rate("0/s").unwrap_err().contains("never run"));
        assert!(rate("180").unwrap_err().contains("not a rate"));
        assert!(rate("many/s").unwrap_err().contains("not a number"));
        assert!(rate("180/fortnight").unwrap_err().contains("unknown unit"));
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
