//! The page shell and the helpers every page uses to show values safely.

use crate::access::CSRF_FIELD;
use crate::Shared;
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use std::time::Duration;

/// A whole page: head, navigation, read-only badge, the content.
pub(crate) fn page(title: &str, shared: Option<&Shared>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx must not inject its inline indicator style: the CSP allows none.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false}"#;
                title { (title) " · Herald" }
                link rel="stylesheet" href="/assets/console.css";
                link rel="icon" href="/assets/favicon.svg" type="image/svg+xml";
                script src="/assets/htmx.min.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "Herald" }
                    nav {
                        a href="/" { "Overview" }
                        a href="/dead-letters" { "Dead letters" }
                        a href="/outbox" { "Outbox" }
                        a href="/feed" { "Event feed" }
                    }
                    @if let Some(shared) = shared {
                        @if shared.access.read_only {
                            span.badge.read-only title="Changes are turned off" { "read-only" }
                        }
                        @if shared.access.console_token.is_some() {
                            form.inline method="post" action="/logout" {
                                (csrf_input(shared))
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (content) }
            }
        }
    }
}

/// The hidden CSRF field of every mutation form.
pub(crate) fn csrf_input(shared: &Shared) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(shared.keys.csrf_token()); }
}

/// Text as it may be shown: control characters other than newline and tab (NUL included) become
/// `\u{..}` escapes, so they are visible and cannot confuse the page. HTML escaping is maud's.
pub(crate) fn visible(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            shown.push_str(&c.escape_unicode().to_string());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// A JSON value, indented. Strings inside keep JSON's escapes (`\u0000`).
pub(crate) fn json(value: &serde_json::Value) -> String {
    visible(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()))
}

pub(crate) fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(crate) fn age(at: &DateTime<Utc>) -> String {
    let seconds = (Utc::now() - *at).num_seconds().max(0);
    duration(Duration::from_secs(seconds.unsigned_abs()))
}

pub(crate) fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{:.1} s", d.as_secs_f64()),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A notice after a mutation (`?done=redriven&n=3`): fixed sentences, only the count comes from
/// the URL.
pub(crate) fn notice(done: Option<&str>, count: Option<u64>) -> Markup {
    let n = count.unwrap_or(0);
    let text = match done {
        Some("redriven") => {
            format!("{n} dead letter(s) back in the outbox: the running relay delivers them.")
        }
        Some("purged") => format!("{n} dead letter(s) purged."),
        Some("missing") => format!("{n} dead letter(s) were already gone."),
        _ => return PreEscaped(String::new()),
    };
    html! { p.notice role="status" { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_made_visible() {
        assert_eq!(visible("a\0b\u{1b}[31m\nc\td"), "a\\u{0}b\\u{1b}[31m\nc\td");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(duration(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(duration(Duration::from_secs(7300)), "2 h 1 min");
        assert_eq!(duration(Duration::from_secs(90_000)), "1 d 1 h");
    }
}
