//! The dead-letters pages: list with filters, one entry in full, re-drive and purge.

use super::layout::{age, csrf_input, json, notice, page, time, visible};
use super::{mutation, store_error, Failure, FormData};
use crate::Shared;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use herald_core::{DeadLetter, DeadLetterId};
use maud::{html, Markup};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The filters look at the oldest this many dead letters (the store lists oldest first).
pub(crate) const SCAN_LIMIT: usize = 10_000;
/// Rows shown on the list page.
const SHOWN: usize = 200;
/// Ids shown on a purge confirmation.
const CONFIRM_SHOWN: usize = 20;

/// Which dead letters a page or an action is about.
#[derive(Debug, Default, Clone)]
pub(crate) struct Filter {
    handler: Option<String>,
    kind: Option<String>,
    reason: Option<String>,
    older_than: Option<String>,
    newer_than: Option<String>,
}

/// `30s`, `10m`, `2h`, `3d`.
fn parse_age(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    number.checked_mul(seconds).map(Duration::from_secs)
}

impl Filter {
    pub(crate) fn from_form(form: &FormData) -> Self {
        let field = |name: &str| {
            form.get(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Filter {
            handler: field("handler"),
            kind: field("kind"),
            reason: field("reason"),
            older_than: field("older_than"),
            newer_than: field("newer_than"),
        }
    }

    fn fields(&self) -> [(&'static str, Option<&str>); 5] {
        [
            ("handler", self.handler.as_deref()),
            ("kind", self.kind.as_deref()),
            ("reason", self.reason.as_deref()),
            ("older_than", self.older_than.as_deref()),
            ("newer_than", self.newer_than.as_deref()),
        ]
    }

    /// The problems with the age fields, in words.
    fn problems(&self) -> Vec<String> {
        [
            ("older than", &self.older_than),
            ("newer than", &self.newer_than),
        ]
        .into_iter()
        .filter_map(|(label, value)| {
            let value = value.as_deref()?;
            parse_age(value).is_none().then(|| {
                format!("`{label}` must be a number and a unit: 30s, 10m, 2h or 3d (got `{value}`)")
            })
        })
        .collect()
    }

    fn matches(&self, letter: &DeadLetter, now: DateTime<Utc>) -> bool {
        let age = (now - letter.dead_lettered_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        self.handler.as_deref().is_none_or(|h| letter.handler == h)
            && self
                .kind
                .as_deref()
                .is_none_or(|k| letter.failure.map_or("none", |f| f.as_str()) == k)
            && self
                .reason
                .as_deref()
                .is_none_or(|r| letter.reason.as_str() == r)
            && self
                .older_than
                .as_deref()
                .and_then(parse_age)
                .is_none_or(|min| age >= min)
            && self
                .newer_than
                .as_deref()
                .and_then(parse_age)
                .is_none_or(|max| age < max)
    }

    /// The filter as a query string (`handler=..&kind=..`), for links and redirects.
    fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in self.fields() {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        query.finish()
    }

    /// The filter as hidden fields of a form.
    fn hidden(&self) -> Markup {
        html! {
            @for (name, value) in self.fields() {
                @if let Some(value) = value { input type="hidden" name=(name) value=(value); }
            }
        }
    }
}

/// The oldest [`SCAN_LIMIT`] dead letters, and how many are stored.
async fn scan(shared: &Shared) -> Result<(Vec<DeadLetter>, u64), Failure> {
    let store = shared.ops.dead_letters();
    let letters = store.list(SCAN_LIMIT).await.map_err(store_error)?;
    let count = store.count().await.map_err(store_error)?;
    Ok((letters, count))
}

fn truncated(text: &str, max: usize) -> String {
    let shown = visible(text);
    match shown.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &shown[..cut]),
        None => shown,
    }
}

pub(super) async fn list(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let form = FormData::parse(query.unwrap_or_default().as_bytes());
    let filter = Filter::from_form(&form);
    let problems = filter.problems();
    let (letters, count) = match scan(&shared).await {
        Ok(found) => found,
        Err(failure) => return failure.into_response(),
    };
    let now = Utc::now();
    let handlers: BTreeSet<&str> = letters.iter().map(|l| l.handler.as_str()).collect();
    let matching: Vec<&DeadLetter> = if problems.is_empty() {
        letters.iter().filter(|l| filter.matches(l, now)).collect()
    } else {
        Vec::new()
    };
    let read_only = shared.access.read_only;
    let kinds = [
        "error",
        "permanent_error",
        "panic",
        "timeout",
        "extraction",
        "malformed",
        "cancelled",
        "shutdown",
        "none",
    ];
    let reasons = ["failed", "overflow", "shutdown", "malformed", "cancelled"];
    let select = |name: &'static str, options: Vec<&str>, current: Option<&str>| {
        html! {
            select name=(name) {
                option value="" { "any" }
                @for option in options {
                    option value=(option) selected[current == Some(option)] { (visible(option)) }
                }
            }
        }
    };
    let content = html! {
        h1 { "Dead letters" }
        (notice(form.get("done"), form.get("n").and_then(|n| n.parse().ok())))
        form.filters method="get" action="/dead-letters" {
            label { "Handler" (select("handler", handlers.iter().copied().collect(), filter.handler.as_deref())) }
            label { "Failure kind" (select("kind", kinds.to_vec(), filter.kind.as_deref())) }
            label { "Reason" (select("reason", reasons.to_vec(), filter.reason.as_deref())) }
            label { "Older than" input name="older_than" placeholder="e.g. 10m" size="8" value=[filter.older_than.as_deref()]; }
            label { "Newer than" input name="newer_than" placeholder="e.g. 2d" size="8" value=[filter.newer_than.as_deref()]; }
            button type="submit" { "Filter" }
            a href="/dead-letters" { "Clear" }
        }
        @for problem in &problems { p.error role="alert" { (problem) } }
        p.muted {
            (matching.len()) " matching of " (count) " stored"
            @if count as usize > letters.len() { " (the filters look at the oldest " (SCAN_LIMIT) ")" }
            @if matching.len() > SHOWN { "; the oldest " (SHOWN) " are shown" }
            "."
        }
        @if matching.is_empty() {
            p #no-dead-letters { "No dead letters here." }
        } @else {
            form #selection method="post" action="/dead-letters/redrive" {
                (csrf_input(&shared))
                (filter.hidden())
                @if !read_only {
                    div.actions {
                        button type="submit" name="scope" value="selected" { "Re-drive selected" }
                        button type="submit" name="scope" value="matching" { "Re-drive all " (matching.len()) " matching" }
                        button.danger type="submit" name="scope" value="selected" formaction="/dead-letters/purge" { "Purge selected…" }
                        button.danger type="submit" name="scope" value="matching" formaction="/dead-letters/purge" { "Purge all matching…" }
                    }
                }
                table #dead-letters {
                    thead { tr {
                        @if !read_only { th { span.muted { "select" } } }
                        th.num { "id" } th { "dead-lettered" } th { "handler" } th { "message" }
                        th { "reason" } th { "failure" } th.num { "attempts" } th { "last error" }
                        @if !read_only { th {} }
                    } }
                    tbody {
                        @for letter in matching.iter().take(SHOWN) {
                            tr data-id=(letter.id) {
                                @if !read_only { td { input type="checkbox" name="id" value=(letter.id) aria-label={"select " (letter.id)}; } }
                                td.num { a href={"/dead-letters/" (letter.id)} { (letter.id) } }
                                td title=(time(&letter.dead_lettered_at)) { (age(&letter.dead_lettered_at)) " ago" }
                                td { code { (visible(&letter.handler)) } }
                                td { (visible(&letter.envelope.name)) }
                                td { (letter.reason) }
                                td { (letter.failure.map_or("-", |k| k.as_str())) }
                                td.num { (letter.attempts) }
                                td { (truncated(letter.last_error.as_deref().unwrap_or("-"), 120)) }
                                @if !read_only {
                                    td { button.secondary type="submit" name="one" value=(letter.id) { "Re-drive" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Html(page("Dead letters", Some(&shared), content).into_string()).into_response()
}

pub(super) async fn detail(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let not_found = || {
        super::refusal(
            StatusCode::NOT_FOUND,
            "No dead letter with this id (re-driven or purged already?).",
        )
    };
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let letter = match shared.ops.dead_letters().get(DeadLetterId(id)).await {
        Ok(Some(letter)) => letter,
        Ok(None) => return not_found(),
        Err(error) => return store_error(error).into_response(),
    };
    let envelope = &letter.envelope;
    let content = html! {
        h1 { "Dead letter " (letter.id) }
        @if !shared.access.read_only {
            form.actions method="post" action="/dead-letters/redrive" {
                (csrf_input(&shared))
                input type="hidden" name="one" value=(letter.id);
                button type="submit" { "Re-drive" }
                button.danger type="submit" formaction="/dead-letters/purge" { "Purge…" }
            }
        }
        dl.facts {
            dt { "handler" } dd { code { (visible(&letter.handler)) } }
            dt { "message" } dd { (visible(&envelope.name)) }
            dt { "message id" } dd { code { (envelope.id) } }
            dt { "key" } dd { (visible(envelope.key.as_deref().unwrap_or("-"))) }
            dt { "idempotency key" } dd { (visible(envelope.idempotency_key.as_deref().unwrap_or("-"))) }
            dt { "published" } dd { (time(&envelope.occurred_at)) }
            dt { "reason" } dd { (letter.reason) }
            dt { "failure" } dd { (letter.failure.map_or("-", |k| k.as_str())) }
            dt { "attempts" } dd { (letter.attempts) }
            dt { "first failed" } dd { (letter.first_failed_at.as_ref().map_or("-".to_owned(), time)) }
            dt { "last failed" } dd { (letter.last_failed_at.as_ref().map_or("-".to_owned(), time)) }
            dt { "dead-lettered" } dd { (time(&letter.dead_lettered_at)) " (" (age(&letter.dead_lettered_at)) " ago)" }
        }
        h2 { "Last error" }
        pre #last-error { (visible(letter.last_error.as_deref().unwrap_or("-"))) }
        @if letter.first_error != letter.last_error {
            h2 { "First error" }
            pre #first-error { (visible(letter.first_error.as_deref().unwrap_or("-"))) }
        }
        h2 { "Payload" }
        pre #payload { (json(&letter.payload)) }
        h2 { "Headers" }
        pre #headers { (json(&serde_json::to_value(&envelope.headers).unwrap_or_default())) }
        p { a href="/dead-letters" { "All dead letters" } }
    };
    Html(page(&format!("Dead letter {id}"), Some(&shared), content).into_string()).into_response()
}

/// The ids an action is about: one (`one`), the ticked ones (`id`), or all matching the filter.
async fn targets(shared: &Shared, form: &FormData) -> Result<Vec<DeadLetterId>, Failure> {
    if let Some(one) = form.get("one") {
        return Ok(one.parse().map(DeadLetterId).into_iter().collect());
    }
    if form.get("scope") == Some("matching") {
        let filter = Filter::from_form(form);
        if let Some(problem) = filter.problems().into_iter().next() {
            return Err(Failure::Refused(StatusCode::BAD_REQUEST, problem));
        }
        let (letters, _) = scan(shared).await?;
        let now = Utc::now();
        return Ok(letters
            .iter()
            .filter(|l| filter.matches(l, now))
            .map(|l| l.id)
            .collect());
    }
    Ok(form
        .all("id")
        .filter_map(|id| id.parse().ok().map(DeadLetterId))
        .collect())
}

fn back(filter: &Filter, done: &str, n: u64, missing: u64) -> Response {
    let mut to = format!("/dead-letters?done={done}&n={n}");
    if missing > 0 && done != "missing" {
        to = format!("/dead-letters?done={done}&n={n}&missing={missing}");
    }
    let query = filter.query();
    if !query.is_empty() {
        to.push('&');
        to.push_str(&query);
    }
    Redirect::to(&to).into_response()
}

pub(super) async fn redrive(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match mutation(&shared, &headers, &body) {
        Ok(form) => form,
        Err(refused) => return refused.into_response(),
    };
    let ids = match targets(&shared, &form).await {
        Ok(ids) => ids,
        Err(failure) => return failure.into_response(),
    };
    if ids.is_empty() {
        return super::refusal(
            StatusCode::BAD_REQUEST,
            "Nothing selected: tick the dead letters to re-drive first.",
        );
    }
    let (mut moved, mut missing) = (0u64, 0u64);
    let mut rows = Vec::new();
    for id in ids {
        match shared.ops.redrive(id).await {
            Ok(Some(row)) => {
                moved += 1;
                rows.push(row);
            }
            Ok(None) => missing += 1,
            Err(error) => return store_error(error).into_response(),
        }
    }
    tracing::info!(moved, missing, "console: dead letters re-driven");
    if let [row] = rows[..] {
        // One re-drive: show where it went, so the operator can watch it being delivered.
        return Redirect::to(&format!("/feed?row={row}&done=redriven")).into_response();
    }
    if moved == 0 {
        return back(&Filter::from_form(&form), "missing", missing, 0);
    }
    back(&Filter::from_form(&form), "redriven", moved, missing)
}

pub(super) async fn purge(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match mutation(&shared, &headers, &body) {
        Ok(form) => form,
        Err(refused) => return refused.into_response(),
    };
    let filter = Filter::from_form(&form);
    let ids = match targets(&shared, &form).await {
        Ok(ids) => ids,
        Err(failure) => return failure.into_response(),
    };
    if ids.is_empty() {
        return super::refusal(
            StatusCode::BAD_REQUEST,
            "Nothing selected: tick the dead letters to purge first.",
        );
    }
    if form.get("confirm") != Some("yes") {
        // The confirmation names the ids resolved now: what is purged is what was shown.
        let content = html! {
            h1 { "Purge " (ids.len()) " dead letter(s)?" }
            p.error { "Purged dead letters are deleted for good: they cannot be re-driven afterwards." }
            p { "Ids: "
                @for id in ids.iter().take(CONFIRM_SHOWN) { a href={"/dead-letters/" (id)} { (id) } " " }
                @if ids.len() > CONFIRM_SHOWN { "and " (ids.len() - CONFIRM_SHOWN) " more" }
            }
            form.actions method="post" action="/dead-letters/purge" {
                (csrf_input(&shared))
                (filter.hidden())
                input type="hidden" name="confirm" value="yes";
                @for id in &ids { input type="hidden" name="id" value=(id); }
                button.danger #confirm-purge type="submit" { "Purge " (ids.len()) " dead letter(s)" }
                a href={"/dead-letters?" (filter.query())} { "Cancel" }
            }
        };
        return Html(page("Confirm purge", Some(&shared), content).into_string()).into_response();
    }
    let store = shared.ops.dead_letters();
    let (mut purged, mut missing) = (0u64, 0u64);
    for id in ids {
        match store.purge(Some(id)).await {
            Ok(0) => missing += 1,
            Ok(n) => purged += n,
            Err(error) => return store_error(error).into_response(),
        }
    }
    tracing::info!(purged, missing, "console: dead letters purged");
    back(&filter, "purged", purged, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_age("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_age(" 2h "), Some(Duration::from_secs(7200)));
        assert_eq!(parse_age("3d"), Some(Duration::from_secs(259_200)));
        assert_eq!(parse_age("3"), None);
        assert_eq!(parse_age("h"), None);
        assert_eq!(parse_age("99999999999999999999d"), None);
        assert_eq!(parse_age("18446744073709551615d"), None);
    }
}
