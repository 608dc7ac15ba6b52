//! Helpers shared by the attribute parsers: options split at top-level commas, so that an error can
//! show the user's attribute corrected, and "did you mean" suggestions for misspelt keys.

use proc_macro2::{Delimiter, Ident, Spacing, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};

/// The options of one attribute, e.g. the `timeout = "5s"` and `dedupe` of
/// `#[async_handler(timeout = "5s", dedupe)]`, each kept as tokens.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// How to print the attribute around its options: `#[async_handler({})]`.
    template: &'static str,
    pub(crate) items: Vec<TokenStream>,
}

impl Options {
    /// Splits the rest of `input` at its top-level commas (commas inside brackets stay put).
    /// A trailing comma is allowed; an empty option (`a,,b`) is an error.
    pub(crate) fn parse(input: ParseStream<'_>, template: &'static str) -> syn::Result<Self> {
        let mut items = Vec::new();
        let mut current = TokenStream::new();
        // Commas inside `<..>` separate generic arguments: `reply = Result<u32, String>`.
        let mut angle_depth = 0usize;
        let mut previous_joint = None;
        while !input.is_empty() {
            let tree: TokenTree = input.parse()?;
            let arrow = matches!(previous_joint, Some('-' | '='));
            previous_joint = match &tree {
                TokenTree::Punct(punct) if punct.spacing() == Spacing::Joint => {
                    Some(punct.as_char())
                }
                _ => None,
            };
            match &tree {
                TokenTree::Punct(punct) if punct.as_char() == '<' => {
                    angle_depth += 1;
                    current.extend([tree]);
                }
                TokenTree::Punct(punct) if punct.as_char() == '>' && !arrow => {
                    angle_depth = angle_depth.saturating_sub(1);
                    current.extend([tree]);
                }
                TokenTree::Punct(punct) if punct.as_char() == ',' && angle_depth == 0 => {
                    if current.is_empty() {
                        return Err(syn::Error::new(
                            punct.span(),
                            "unexpected `,`: an option is missing here",
                        ));
                    }
                    items.push(std::mem::take(&mut current));
                }
                _ => current.extend([tree]),
            }
        }
        if !current.is_empty() {
            items.push(current);
        }
        Ok(Options { template, items })
    }

    /// Parses every option with `parse`, collecting the errors of all of them.
    pub(crate) fn parse_each<T>(
        &self,
        errors: &mut Option<syn::Error>,
        parse: impl Fn(usize, ParseStream<'_>) -> syn::Result<T>,
    ) -> Vec<(usize, T)> {
        let mut parsed = Vec::new();
        for (index, tokens) in self.items.iter().enumerate() {
            match (|input: ParseStream<'_>| parse(index, input)).parse2(tokens.clone()) {
                Ok(value) => parsed.push((index, value)),
                Err(error) => push_error(errors, error),
            }
        }
        parsed
    }

    /// The attribute as written, with option `index` replaced by `replacement` (or removed).
    pub(crate) fn corrected(&self, index: usize, replacement: Option<&str>) -> String {
        let options: Vec<String> = self
            .items
            .iter()
            .enumerate()
            .filter_map(|(i, tokens)| {
                if i == index {
                    replacement.map(str::to_owned)
                } else {
                    Some(render(tokens))
                }
            })
            .collect();
        self.example(&options.join(", "))
    }

    /// The attribute with a single option, e.g. `#[async_handler(timeout = "5s")]`.
    /// An empty attribute prints without brackets: `#[async_handler]`.
    pub(crate) fn example(&self, option: &str) -> String {
        if option.is_empty() {
            self.template.replace("({})", "")
        } else {
            self.template.replace("{}", option)
        }
    }
}

/// Adds `error` to the errors collected so far.
pub(crate) fn push_error(errors: &mut Option<syn::Error>, error: syn::Error) {
    match errors {
        Some(existing) => existing.combine(error),
        None => *errors = Some(error),
    }
}

/// Reads the key of an option: any identifier, keywords included.
pub(crate) fn parse_key(input: ParseStream<'_>) -> syn::Result<Ident> {
    Ident::parse_any(input).map_err(|e| syn::Error::new(e.span(), "expected an option name"))
}

/// Prints tokens the way a person writes them: `retry(max_attempts = 5, jitter)` and
/// `reply = Result<u32, String>`, not `retry (max_attempts = 5 , jitter)` as `TokenStream` does.
pub(crate) fn render(tokens: &TokenStream) -> String {
    let mut out = String::new();
    // Whether the previous token allows a space after it, and what it was.
    let mut space_after = false;
    let mut previous: Option<TokenTree> = None;
    for tree in tokens.clone() {
        let previous_joint =
            matches!(&previous, Some(TokenTree::Punct(p)) if p.spacing() == Spacing::Joint);
        let previous_ident = matches!(&previous, Some(TokenTree::Ident(_)));
        let (before, after) = match &tree {
            // `retry(..)` and `fixed(..)` read as calls.
            TokenTree::Group(_) => (!previous_ident, true),
            TokenTree::Ident(_) | TokenTree::Literal(_) => (true, true),
            TokenTree::Punct(punct) => match punct.as_char() {
                _ if previous_joint => (
                    false,
                    punct.spacing() == Spacing::Alone && punct.as_char() != ':',
                ),
                ',' | ';' => (false, true),
                ':' if punct.spacing() == Spacing::Joint => (false, false),
                ':' => (false, true),
                '<' | '.' | '!' => (false, false),
                '>' => (false, true),
                '&' | '\'' | '-' | '#' => (true, false),
                _ => (true, punct.spacing() == Spacing::Alone),
            },
        };
        if space_after && before {
            out.push(' ');
        }
        match &tree {
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{ ", " }"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                out.push_str(&render(&group.stream()));
                out.push_str(close);
            }
            other => out.push_str(&other.to_string()),
        }
        space_after = after;
        previous = Some(tree);
    }
    out
}

/// The closest of `candidates` to the misspelt `word`, if one is close enough to be what was meant.
/// `aliases` maps words from other libraries (`max_retries`) to Herald's (`max_attempts`).
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: &[&'a str],
    aliases: &[(&str, &'a str)],
) -> Option<&'a str> {
    let word_lower = word.to_ascii_lowercase();
    if let Some((_, to)) = aliases.iter().find(|(from, _)| *from == word_lower) {
        return Some(to);
    }
    candidates
        .iter()
        .map(|candidate| (edit_distance(&word_lower, candidate), *candidate))
        .filter(|(distance, candidate)| {
            let common_prefix = word_lower
                .chars()
                .zip(candidate.chars())
                .take_while(|(a, b)| a == b)
                .count();
            let one_extends_the_other =
                common_prefix >= 3 && common_prefix == word_lower.len().min(candidate.len());
            // `id` for `order_id`, `attempts` for `max_attempts`.
            let one_word_of_it = word_lower.len() >= 2
                && candidate.split('_').count() > 1
                && candidate.split('_').any(|part| part == word_lower);
            *distance <= (word.len() / 3).max(1)
                || one_extends_the_other
                || one_word_of_it
                || (common_prefix >= 3 && *distance <= word.len() / 2)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: Levenshtein, plus swapping two neighbours (`nmae`) counts one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between the first i characters of a and the first j of b.
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// `a`, `b` and `c` as a readable list: "`a`, `b` or `c`".
pub(crate) fn one_of(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn options(tokens: TokenStream) -> Options {
        let parser = |input: ParseStream<'_>| Options::parse(input, "#[async_handler({})]");
        parser.parse2(tokens).unwrap()
    }

    #[test]
    fn splits_at_top_level_commas_only() {
        let options = options(quote!(retry(max_attempts = 5, jitter), dedupe,));
        assert_eq!(options.items.len(), 2);
        assert_eq!(render(&options.items[0]), "retry(max_attempts = 5, jitter)");
        let generics = super::tests::options(
            quote!(reply = Result<Vec<u8>, String>, key = id, f = fn() -> u8, x),
        );
        assert_eq!(generics.items.len(), 4);
    }

    #[test]
    fn an_empty_option_is_an_error() {
        let parser = |input: ParseStream<'_>| Options::parse(input, "#[x({})]");
        let error = parser.parse2(quote!(dedupe,, ordered)).unwrap_err();
        assert!(error.to_string().contains("an option is missing"));
    }

    #[test]
    fn renders_like_a_person_writes() {
        let tokens = quote!(
            backoff = exponential(100ms, 2.0, 10s),
            timeout = "5s",
            on_failure = dead_letter
        );
        assert_eq!(
            render(&tokens),
            r#"backoff = exponential(100ms, 2.0, 10s), timeout = "5s", on_failure = dead_letter"#
        );
        assert_eq!(render(&quote!(key = a::b)), "key = a::b");
        assert_eq!(
            render(&quote!(reply = Result<Vec<u8>, String>)),
            "reply = Result<Vec<u8>, String>"
        );
        assert_eq!(
            render(&quote!(reply = &'static str)),
            "reply = &'static str"
        );
        assert_eq!(render(&quote!(f(a) -> b)), "f(a) -> b");
    }

    #[test]
    fn corrected_replaces_or_removes_one_option() {
        let options = options(quote!(timeout = "5s", retires(max_attempts = 5), dedupe));
        assert_eq!(
            options.corrected(1, Some("retry(max_attempts = 5)")),
            r#"#[async_handler(timeout = "5s", retry(max_attempts = 5), dedupe)]"#
        );
        assert_eq!(
            options.corrected(0, None),
            "#[async_handler(retires(max_attempts = 5), dedupe)]"
        );
    }

    #[test]
    fn suggests_close_words_only() {
        let keys = [
            "name",
            "pool",
            "retry",
            "timeout",
            "on_failure",
            "rate",
            "dedupe",
            "ordered",
        ];
        assert_eq!(suggest("retires", &keys, &[]), Some("retry"));
        assert_eq!(suggest("retries", &keys, &[]), Some("retry"));
        assert_eq!(suggest("timout", &keys, &[]), Some("timeout"));
        assert_eq!(suggest("order", &keys, &[]), Some("ordered"));
        assert_eq!(suggest("Dedup", &keys, &[]), Some("dedupe"));
        assert_eq!(suggest("nmae", &keys, &[]), Some("name"));
        assert_eq!(
            suggest("order", &["order_id", "reason"], &[]),
            Some("order_id")
        );
        assert_eq!(suggest("foo", &keys, &[]), None);
        assert_eq!(suggest("user", &["order_id"], &[]), None);
        assert_eq!(
            suggest("id", &["order_id", "reason"], &[]),
            Some("order_id")
        );
        assert_eq!(suggest("failure", &keys, &[]), Some("on_failure"));
        assert_eq!(suggest("queue", &keys, &[("queue", "pool")]), Some("pool"));
    }

    #[test]
    fn lists_words() {
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
        assert_eq!(one_of(&["a"]), "`a`");
    }
}
