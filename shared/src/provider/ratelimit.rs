//! What a 429 taught this process: provider paths paused until a moment.
//!
//! Verda limits requests per project (500/min) and per (project, method, request path)
//! (60/min; `GET /v1/instances` 120/min), in 60-second windows, and answers `429
//! rate_limit_exceeded` with `Retry-After` (seconds) and a `RateLimit` header naming the
//! exhausted limit. All deploys share one path (`POST /v1/instances`) and all deletes another
//! (`PUT /v1/instances`), so a burst of jobs meets the limit together. A call to a path (or, for
//! the project limit, any call) known to be paused is answered here, without a request: the
//! limit is not pushed further, and the caller defers its job to when the pause ends.
//!
//! The pauses live in the process (a warm Lambda container serves many jobs); each container
//! learns a pause from one 429 of its own. See docs/decisions.md, "Provider rate limits".

use reqwest::header::HeaderMap;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A provider call a caller may ask about before starting a step that makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderCall {
    /// `POST /instances`.
    Deploy,
    /// `POST /scripts`.
    CreateScript,
    /// `PUT /instances` (the delete action).
    DeleteInstance,
    /// `GET /instances`.
    ListInstances,
}

impl ProviderCall {
    /// Method and path (below the `/v1` base): the provider's rate-limit key.
    pub(crate) fn key(self) -> (&'static str, &'static str) {
        match self {
            ProviderCall::Deploy => ("POST", "/instances"),
            ProviderCall::CreateScript => ("POST", "/scripts"),
            ProviderCall::DeleteInstance => ("PUT", "/instances"),
            ProviderCall::ListInstances => ("GET", "/instances"),
        }
    }
}

/// The wait of a 429 that does not say how long. Verda's limiter always does (`Retry-After`,
/// `RateLimit`), so this one came from something else on the way (a proxy): it is not
/// remembered as a pause, and the caller tries again after this.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// Bounds on a believed `Retry-After` (a window is 60 s; a broken header must not stall us).
const MIN_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(300);
/// The key of the project-wide pause.
const PROJECT: &str = "*";

/// Paths (and the project) paused until an instant.
#[derive(Debug, Default)]
pub(crate) struct Pauses {
    until: Mutex<HashMap<String, Instant>>,
}

fn key(method: &str, path: &str) -> String {
    format!("{method} {path}")
}

impl Pauses {
    /// Records a 429 on `method path`: that path — or, when the `RateLimit` header says the
    /// project limit is exhausted, every path — is paused for the returned wait. A 429 without
    /// the limiter's headers is not remembered (see [`DEFAULT_WAIT`]).
    pub(crate) fn note(&self, method: &str, path: &str, headers: &HeaderMap) -> Duration {
        let Some(wait) = retry_after(headers) else {
            return DEFAULT_WAIT;
        };
        let k = if project_exhausted(headers) {
            PROJECT.to_string()
        } else {
            key(method, path)
        };
        let until = Instant::now() + wait;
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(k).or_insert(until);
        *entry = (*entry).max(until);
        wait
    }

    /// How long `method path` is still paused, if it is.
    pub(crate) fn wait(&self, method: &str, path: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, until| *until > now);
        [map.get(&key(method, path)), map.get(PROJECT)]
            .into_iter()
            .flatten()
            .max()
            .map(|until| *until - now)
    }
}

/// `Retry-After` in seconds (the provider's form; fractions tolerated), else the reset time of
/// an exhausted limit in `RateLimit`; bounded. `None` when neither says.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let from_retry_after = header("retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_WAIT.as_secs_f64())));
    let from_ratelimit = || {
        header("ratelimit").and_then(|v| {
            limits(v)
                .filter(|l| l.remaining == Some(0))
                .filter_map(|l| l.reset_secs)
                .max()
                .map(Duration::from_secs)
        })
    };
    from_retry_after
        .or_else(from_ratelimit)
        .map(|w| w.clamp(MIN_WAIT, MAX_WAIT))
}

/// Whether the `RateLimit` header says the project-wide limit (not just this path's) is spent.
fn project_exhausted(headers: &HeaderMap) -> bool {
    headers
        .get("ratelimit")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| limits(v).any(|l| l.name == "project" && l.remaining == Some(0)))
}

struct Limit<'a> {
    name: &'a str,
    remaining: Option<u64>,
    reset_secs: Option<u64>,
}

/// The entries of `RateLimit: "project";r=419;t=44, "endpoint";r=0;t=49` (the IETF draft's
/// structured-field list; only the parts we read).
fn limits(value: &str) -> impl Iterator<Item = Limit<'_>> {
    value.split(',').map(|entry| {
        let mut parts = entry.split(';').map(str::trim);
        let name = parts.next().unwrap_or("").trim_matches('"');
        let mut limit = Limit {
            name,
            remaining: None,
            reset_secs: None,
        };
        for part in parts {
            match part.split_once('=') {
                Some(("r", v)) => limit.remaining = v.trim().parse().ok(),
                Some(("t", v)) => limit.reset_secs = v.trim().parse().ok(),
                _ => {}
            }
        }
        limit
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_is_read_from_the_headers() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "49")])),
            Some(Duration::from_secs(49))
        );
        // Without Retry-After, the reset of the exhausted limit.
        assert_eq!(
            retry_after(&headers(&[(
                "ratelimit",
                "\"project\";r=419;t=44, \"endpoint\";r=0;t=37"
            )])),
            Some(Duration::from_secs(37))
        );
        assert_eq!(retry_after(&HeaderMap::new()), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "0")])),
            Some(MIN_WAIT),
            "never a busy loop"
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "99999")])),
            Some(MAX_WAIT)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
    }

    #[test]
    fn a_429_pauses_its_path_or_the_whole_project() {
        let p = Pauses::default();
        let endpoint = headers(&[
            ("retry-after", "30"),
            ("ratelimit", "\"project\";r=419;t=44, \"endpoint\";r=0;t=30"),
        ]);
        assert_eq!(
            p.note("POST", "/instances", &endpoint),
            Duration::from_secs(30)
        );
        let w = p.wait("POST", "/instances").expect("paused");
        assert!(w > Duration::from_secs(29) && w <= Duration::from_secs(30));
        assert_eq!(p.wait("PUT", "/instances"), None, "other method");
        assert_eq!(p.wait("POST", "/scripts"), None, "other path");

        let project = headers(&[
            ("retry-after", "10"),
            ("ratelimit", "\"project\";r=0;t=10, \"endpoint\";r=5;t=10"),
        ]);
        p.note("GET", "/balance", &project);
        assert!(p.wait("POST", "/scripts").is_some(), "every path waits");
        // The longer pause wins.
        assert!(p.wait("POST", "/instances").unwrap() > Duration::from_secs(20));
    }

    #[test]
    fn a_429_that_does_not_say_how_long_is_not_remembered() {
        let p = Pauses::default();
        assert_eq!(p.note("GET", "/locations", &HeaderMap::new()), DEFAULT_WAIT);
        assert_eq!(p.wait("GET", "/locations"), None);
    }

    #[test]
    fn pauses_end() {
        let p = Pauses::default();
        p.until.lock().unwrap().insert(
            key("POST", "/instances"),
            Instant::now() + Duration::from_millis(20),
        );
        assert!(p.wait("POST", "/instances").is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(p.wait("POST", "/instances"), None);
        assert!(
            p.until.lock().unwrap().is_empty(),
            "expired pauses are dropped"
        );
    }
}
