//! Who may see and change what.
//!
//! - **Loopback by default.** [`serve`](crate::serve) refuses an address other than loopback
//!   unless an access token or a trusted proxy header is configured ([`Access::check_bind`]).
//! - **Console access.** With a token, a browser logs in once at `/login` and gets an `HttpOnly`,
//!   `SameSite=Strict` session cookie (also `Secure` when a proxy says the browser came over
//!   HTTPS, see `over_https`) holding an HMAC of the token under a per-process key (never
//!   the token); a script may send `Authorization: Bearer <token>` instead. With a proxy header,
//!   a request that carries it (non-empty) is let in.
//! - **CSRF.** Every mutation is a `POST` whose form carries a token derived from the per-process
//!   key (an HMAC, compared in constant time); a `POST` without it, or marked `Sec-Fetch-Site:
//!   cross-site` by the browser, is refused. No `GET` changes anything.
//! - **Read-only mode** hides the mutation buttons and refuses the `POST`s.
//! - **Feed consumers** have their own bearer tokens (compared in constant time); a consumer reads
//!   and writes only its own stored position.
//! - **Secrets** are [`Secret`]s: their `Debug` prints `***`, and no page or log shows them.

use crate::ServeError;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::{HeaderMap, HeaderName};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// A token or password: never printed (`Debug` shows `Secret(***)`), compared in constant time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The name of the console's session cookie.
pub const SESSION_COOKIE: &str = "herald_session";
/// The name of the form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// The access rules of one [`HeraldWeb`](crate::HeraldWeb), as configured on its builder.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub(crate) console_token: Option<Secret>,
    pub(crate) proxy_header: Option<String>,
    pub(crate) read_only: bool,
    pub(crate) consumers: Vec<(String, Secret)>,
}

/// Who called the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FeedCaller {
    /// A configured consumer, by name.
    Consumer(String),
    /// No consumers are configured and the console's rules let the caller in.
    Anonymous,
}

impl Access {
    /// Whether a console token or a proxy header guards the console.
    pub fn is_protected(&self) -> bool {
        self.console_token.is_some() || self.proxy_header.is_some()
    }

    /// Checks that serving on `addr` is safe: loopback, or protected.
    ///
    /// # Errors
    /// [`ServeError::Unprotected`] with the fix in its message.
    pub fn check_bind(&self, addr: SocketAddr) -> Result<(), ServeError> {
        if addr.ip().is_loopback() || self.is_protected() {
            Ok(())
        } else {
            Err(ServeError::Unprotected { addr })
        }
    }

    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(name) = &self.proxy_header {
            if HeaderName::from_bytes(name.as_bytes()).is_err() || name.is_empty() {
                problems.push(format!("`{name}` is not a valid header name"));
            }
        }
        if self
            .console_token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            problems.push("the access token is empty".to_owned());
        }
        for (index, (name, token)) in self.consumers.iter().enumerate() {
            let valid = !name.is_empty()
                && name.len() <= 100
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                problems.push(format!(
                    "feed consumer name `{}` must be 1 to 100 letters, digits, `-`, `_` or `.`",
                    name.escape_debug()
                ));
            }
            if token.expose().trim().is_empty() {
                problems.push(format!("feed consumer `{name}` has an empty token"));
            }
            if self.consumers[..index]
                .iter()
                .any(|(other, _)| other == name)
            {
                problems.push(format!("feed consumer `{name}` is configured twice"));
            }
            if self.consumers[..index]
                .iter()
                .any(|(_, other)| other.expose() == token.expose())
            {
                problems.push(format!(
                    "feed consumer `{name}` shares its token with another consumer: give each its own"
                ));
            }
        }
        problems
    }

    /// Whether the request may use the console.
    pub(crate) fn console_allowed(&self, keys: &Keys, headers: &HeaderMap) -> bool {
        if !self.is_protected() {
            return true;
        }
        if let Some(name) = &self.proxy_header {
            if headers
                .get(name.as_str())
                .is_some_and(|value| !value.as_bytes().iter().all(u8::is_ascii_whitespace))
            {
                return true;
            }
        }
        if let Some(token) = &self.console_token {
            if let Some(presented) = bearer(headers) {
                if keys.same_secret(presented, token.expose()) {
                    return true;
                }
            }
            let expected = keys.session_value(token);
            if cookie(headers, SESSION_COOKIE)
                .is_some_and(|value| bool::from(value.as_bytes().ct_eq(expected.as_bytes())))
            {
                return true;
            }
        }
        false
    }

    /// Who is calling the feed, or `None` when the caller may not.
    pub(crate) fn feed_caller(&self, keys: &Keys, headers: &HeaderMap) -> Option<FeedCaller> {
        if self.consumers.is_empty() {
            return self
                .console_allowed(keys, headers)
                .then_some(FeedCaller::Anonymous);
        }
        let presented = bearer(headers)?;
        // Every token is compared (no early exit), so the time taken does not say which matched.
        let mut found = None;
        for (name, token) in &self.consumers {
            if keys.same_secret(presented, token.expose()) {
                found = Some(name.clone());
            }
        }
        found.map(FeedCaller::Consumer)
    }

    /// Whether `session` is the value of a successful login with `token`.
    pub(crate) fn login(&self, keys: &Keys, token: &str) -> Option<String> {
        let configured = self.console_token.as_ref()?;
        keys.same_secret(token, configured.expose())
            .then(|| keys.session_value(configured))
    }
}

/// The per-process key: CSRF tokens and session cookies are HMACs under it, so a restart
/// invalidates both.
pub(crate) struct Keys {
    key: [u8; 32],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(***)")
    }
}

impl Keys {
    pub(crate) fn generate() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Keys { key })
    }

    fn mac(&self, purpose: &str, value: &[u8]) -> [u8; 32] {
        // HMAC accepts a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// The CSRF token every form carries.
    pub(crate) fn csrf_token(&self) -> String {
        hex::encode(self.mac("csrf", b""))
    }

    /// Whether `presented` is the CSRF token, in constant time.
    pub(crate) fn csrf_ok(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.csrf_token().as_bytes()))
    }

    fn session_value(&self, token: &Secret) -> String {
        hex::encode(self.mac("session", token.expose().as_bytes()))
    }

    /// Compares two secrets in constant time whatever their lengths (through their MACs).
    fn same_secret(&self, presented: &str, configured: &str) -> bool {
        let a = self.mac("compare", presented.as_bytes());
        let b = self.mac("compare", configured.as_bytes());
        bool::from(a.ct_eq(&b))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether the browser says this request comes from another site (`Sec-Fetch-Site`).
pub(crate) fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|value| value.as_bytes() == b"cross-site")
}

/// Whether the browser reached the console over HTTPS, as a TLS-terminating proxy in front of it
/// says (`X-Forwarded-Proto: https`, or `Forwarded: ...;proto=https`): the session cookie is
/// then marked `Secure`, so the browser never sends it over plain HTTP. `herald serve` itself
/// speaks plain HTTP (on loopback unless a token or proxy guards it), where a `Secure` cookie
/// would not be sent back at all.
pub(crate) fn over_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .is_some_and(|first| first.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get("forwarded")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .is_some_and(|first| {
            first.split(';').any(|pair| {
                pair.split_once('=').is_some_and(|(name, value)| {
                    name.trim().eq_ignore_ascii_case("proto")
                        && value.trim().trim_matches('"').eq_ignore_ascii_case("https")
                })
            })
        });
    forwarded_proto || forwarded
}

/// The `Set-Cookie` value of the console session (`value` empty: the logout that clears it).
pub(crate) fn session_cookie(value: &str, headers: &HeaderMap) -> String {
    let secure = if over_https(headers) { "; Secure" } else { "" };
    let clear = if value.is_empty() { "; Max-Age=0" } else { "" };
    format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/{secure}{clear}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_session_cookie_is_secure_behind_an_https_proxy_only() {
        let mut headers = HeaderMap::new();
        let plain = session_cookie("abc", &headers);
        assert_eq!(
            plain,
            format!("{SESSION_COOKIE}=abc; HttpOnly; SameSite=Strict; Path=/")
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(session_cookie("abc", &headers).ends_with("; Secure"));
        assert!(session_cookie("", &headers).ends_with("; Secure; Max-Age=0"));
        let mut headers = HeaderMap::new();
        headers.insert(
            "forwarded",
            HeaderValue::from_static("for=192.0.2.60;proto=HTTPS;by=203.0.113.43"),
        );
        assert!(over_https(&headers));
        headers.insert(
            "forwarded",
            HeaderValue::from_static("for=192.0.2.60;proto=http"),
        );
        assert!(!over_https(&headers));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http, https"));
        assert!(!over_https(&headers), "the first hop is the client's");
    }

    fn keys() -> Keys {
        Keys::generate().expect("random")
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2-token");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        let access = Access {
            console_token: Some(secret),
            consumers: vec![("billing".into(), Secret::new("billing-token"))],
            ..Access::default()
        };
        let shown = format!("{access:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("billing-token"),
            "{shown}"
        );
    }

    #[test]
    fn non_loopback_needs_protection() {
        let open = Access::default();
        assert!(open
            .check_bind("127.0.0.1:80".parse().expect("addr"))
            .is_ok());
        assert!(open.check_bind("[::1]:80".parse().expect("addr")).is_ok());
        let refused = open
            .check_bind("0.0.0.0:8080".parse().expect("addr"))
            .expect_err("refused");
        assert!(refused.to_string().contains("--token"), "{refused}");
        let with_token = Access {
            console_token: Some(Secret::new("t")),
            ..Access::default()
        };
        assert!(with_token
            .check_bind("0.0.0.0:8080".parse().expect("addr"))
            .is_ok());
        let with_header = Access {
            proxy_header: Some("x-forwarded-user".into()),
            ..Access::default()
        };
        assert!(with_header
            .check_bind("10.0.0.1:8080".parse().expect("addr"))
            .is_ok());
    }

    #[test]
    fn console_token_by_bearer_session_or_proxy_header() {
        let keys = keys();
        let access = Access {
            console_token: Some(Secret::new("s3cret")),
            proxy_header: Some("x-forwarded-user".into()),
            ..Access::default()
        };
        let mut headers = HeaderMap::new();
        assert!(!access.console_allowed(&keys, &headers));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
        assert!(!access.console_allowed(&keys, &headers));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(access.console_allowed(&keys, &headers));

        let session = access.login(&keys, "s3cret").expect("login");
        assert!(access.login(&keys, "s3cre").is_none());
        assert!(!session.contains("s3cret"));
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; {SESSION_COOKIE}={session}")).expect("cookie"),
        );
        assert!(access.console_allowed(&keys, &headers));
        // A session of another process (another key) is refused.
        assert!(!access.console_allowed(&Keys::generate().expect("random"), &headers));

        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-user", HeaderValue::from_static("   "));
        assert!(!access.console_allowed(&keys, &headers));
        headers.insert("x-forwarded-user", HeaderValue::from_static("kim"));
        assert!(access.console_allowed(&keys, &headers));
    }

    #[test]
    fn feed_consumers_are_told_apart() {
        let keys = keys();
        let access = Access {
            consumers: vec![
                ("billing".into(), Secret::new("tok-billing")),
                ("search".into(), Secret::new("tok-search")),
            ],
            ..Access::default()
        };
        let mut headers = HeaderMap::new();
        assert_eq!(access.feed_caller(&keys, &headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok-search"));
        assert_eq!(
            access.feed_caller(&keys, &headers),
            Some(FeedCaller::Consumer("search".into()))
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic tok-search"));
        assert_eq!(access.feed_caller(&keys, &headers), None);
        // Without consumers, the console's rules apply (open here: no token).
        assert_eq!(
            Access::default().feed_caller(&keys, &HeaderMap::new()),
            Some(FeedCaller::Anonymous)
        );
    }

    #[test]
    fn csrf_tokens_are_per_process() {
        let (a, b) = (keys(), keys());
        assert!(a.csrf_ok(&a.csrf_token()));
        assert!(!a.csrf_ok(&b.csrf_token()));
        assert!(!a.csrf_ok(""));
    }

    #[test]
    fn bad_settings_are_listed_together() {
        let access = Access {
            console_token: Some(Secret::new(" ")),
            proxy_header: Some("bad header".into()),
            consumers: vec![
                ("ok".into(), Secret::new("same")),
                ("ok".into(), Secret::new("same")),
                ("no/slash".into(), Secret::new("x")),
            ],
            ..Access::default()
        };
        let problems = access.problems();
        assert_eq!(problems.len(), 5, "{problems:?}");
    }
}
