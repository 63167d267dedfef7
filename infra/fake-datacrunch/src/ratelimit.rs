//! The provider's rate limits (Verda's OpenAPI document, "Rate Limits"): per project, in fixed
//! windows of 60 s, 500 authenticated requests for the project and 60 for one (method, full
//! request path) — so every deploy (`POST /v1/instances`) shares one budget and every action
//! (`PUT /v1/instances`) another — with route policies overriding the endpoint limit:
//! `GET /v1/instances` and `GET /v1/volumes` 120. Over a limit: 429 `rate_limit_exceeded` with
//! `Retry-After` (seconds until the window that refused it ends). Answers to authenticated
//! requests carry `RateLimit-Policy` and `RateLimit` headers as documented.
//!
//! On by default at the real numbers; `--rate-limit-*` flags and `POST /admin/rate-limits`
//! change them (tests lower them to provoke 429s quickly, the end-to-end stacks raise or turn
//! them off until the client spreads its calls).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use axum::http::{HeaderValue, Method};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The limits (also the body of `GET /admin/rate-limits`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RateLimits {
    pub enabled: bool,
    /// Requests per window for the whole project.
    pub project: u32,
    /// Requests per window for one (method, path).
    pub endpoint: u32,
    /// Requests per window for `GET /v1/instances` and `GET /v1/volumes`.
    pub list: u32,
    pub window_ms: u64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            project: 500,
            endpoint: 60,
            list: 120,
            window_ms: 60_000,
        }
    }
}

/// `POST /admin/rate-limits`: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsPatch {
    pub enabled: Option<bool>,
    pub project: Option<u32>,
    pub endpoint: Option<u32>,
    pub list: Option<u32>,
    pub window_ms: Option<u64>,
}

impl RateLimits {
    pub fn apply(&mut self, p: RateLimitsPatch) -> Result<(), ApiError> {
        if p.window_ms == Some(0) {
            return Err(ApiError::invalid("window_ms must be positive"));
        }
        if let Some(v) = p.enabled {
            self.enabled = v;
        }
        if let Some(v) = p.project {
            self.project = v;
        }
        if let Some(v) = p.endpoint {
            self.endpoint = v;
        }
        if let Some(v) = p.list {
            self.list = v;
        }
        if let Some(v) = p.window_ms {
            self.window_ms = v;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    used: u32,
}

impl Window {
    /// The window at `now` (a new one if the old one ended).
    fn current(self, now: Instant, len: Duration) -> Window {
        if now.duration_since(self.start) >= len {
            Window {
                start: now,
                used: 0,
            }
        } else {
            self
        }
    }

    fn reset_in(&self, now: Instant, len: Duration) -> Duration {
        (self.start + len).saturating_duration_since(now)
    }
}

/// The counters.
#[derive(Debug)]
pub struct RateLimiter {
    pub limits: RateLimits,
    project: Option<Window>,
    endpoints: HashMap<String, Window>,
    /// Requests answered 429 since the last reset.
    pub throttled: u64,
}

/// What a request was told.
pub enum Verdict {
    /// Allowed; the headers to add to the answer.
    Allowed(Vec<(&'static str, HeaderValue)>),
    /// Refused; seconds until it may retry.
    Limited { retry_after_secs: u64 },
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            project: None,
            endpoints: HashMap::new(),
            throttled: 0,
        }
    }

    /// Forgets the current windows (new limits start afresh).
    pub fn clear(&mut self) {
        self.project = None;
        self.endpoints.clear();
    }

    fn endpoint_limit(&self, method: &Method, path: &str) -> u32 {
        let list = method == Method::GET && matches!(path, "/v1/instances" | "/v1/volumes");
        if list {
            self.limits.list
        } else {
            self.limits.endpoint
        }
    }

    /// Counts one authenticated request to `method path` (the path without the query).
    pub fn admit(&mut self, method: &Method, path: &str) -> Verdict {
        if !self.limits.enabled {
            return Verdict::Allowed(Vec::new());
        }
        let now = Instant::now();
        let len = Duration::from_millis(self.limits.window_ms);
        let key = format!("{method} {path}");
        let fresh = Window {
            start: now,
            used: 0,
        };
        let project = self.project.unwrap_or(fresh).current(now, len);
        let endpoint = self
            .endpoints
            .get(&key)
            .copied()
            .unwrap_or(fresh)
            .current(now, len);
        let endpoint_limit = self.endpoint_limit(method, path);
        let mut refused: Option<Duration> = None;
        for (w, limit) in [(&project, self.limits.project), (&endpoint, endpoint_limit)] {
            if w.used >= limit {
                let wait = w.reset_in(now, len);
                refused = Some(refused.map_or(wait, |r| r.max(wait)));
            }
        }
        if let Some(wait) = refused {
            self.throttled += 1;
            self.project = Some(project);
            self.endpoints.insert(key, endpoint);
            return Verdict::Limited {
                retry_after_secs: ceil_secs(wait),
            };
        }
        let project = Window {
            used: project.used + 1,
            ..project
        };
        let endpoint = Window {
            used: endpoint.used + 1,
            ..endpoint
        };
        self.project = Some(project);
        self.endpoints.insert(key, endpoint);
        let w = len.as_secs().max(1);
        let policy = format!(
            "\"project\";q={};w={w}, \"endpoint\";q={endpoint_limit};w={w}",
            self.limits.project
        );
        let remaining = format!(
            "\"project\";r={};t={}, \"endpoint\";r={};t={}",
            self.limits.project.saturating_sub(project.used),
            ceil_secs(project.reset_in(now, len)),
            endpoint_limit.saturating_sub(endpoint.used),
            ceil_secs(endpoint.reset_in(now, len)),
        );
        let headers = [("ratelimit-policy", policy), ("ratelimit", remaining)]
            .into_iter()
            .filter_map(|(k, v)| HeaderValue::from_str(&v).ok().map(|v| (k, v)))
            .collect();
        Verdict::Allowed(headers)
    }
}

/// The 429 the provider answers.
pub fn too_many_requests() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        "Too many requests for the current project or endpoint window",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(project: u32, endpoint: u32, list: u32) -> RateLimiter {
        RateLimiter::new(RateLimits {
            enabled: true,
            project,
            endpoint,
            list,
            window_ms: 60_000,
        })
    }

    fn allowed(v: Verdict) -> bool {
        matches!(v, Verdict::Allowed(_))
    }

    #[test]
    fn endpoint_and_project_limits() {
        let mut l = limiter(5, 2, 3);
        assert!(allowed(l.admit(&Method::POST, "/v1/instances")));
        assert!(allowed(l.admit(&Method::POST, "/v1/instances")));
        match l.admit(&Method::POST, "/v1/instances") {
            Verdict::Limited { retry_after_secs } => assert!((59..=60).contains(&retry_after_secs)),
            Verdict::Allowed(_) => panic!("third deploy allowed"),
        }
        // Another path has its own budget; the list route its own, larger one.
        assert!(allowed(l.admit(&Method::GET, "/v1/instances")));
        assert!(allowed(l.admit(&Method::GET, "/v1/instances")));
        assert!(allowed(l.admit(&Method::GET, "/v1/instances")));
        // The project budget (5) is now spent.
        assert!(!allowed(l.admit(&Method::GET, "/v1/balance")));
        assert_eq!(l.throttled, 2);
    }

    #[test]
    fn windows_end_and_disabled_limits_allow_everything() {
        let mut l = limiter(1, 1, 1);
        l.limits.window_ms = 30;
        assert!(allowed(l.admit(&Method::GET, "/v1/balance")));
        assert!(!allowed(l.admit(&Method::GET, "/v1/balance")));
        std::thread::sleep(Duration::from_millis(40));
        assert!(allowed(l.admit(&Method::GET, "/v1/balance")));
        l.limits.enabled = false;
        for _ in 0..10 {
            assert!(allowed(l.admit(&Method::GET, "/v1/balance")));
        }
    }
}
