//! Fault injection settings, and the `/v1` gate middleware that applies the per-request ones.
//!
//! Faults are counters ("the next N deploys fail") rather than probabilities so that tests are
//! deterministic: a test sets exactly the failures it wants to survive and can assert on the
//! request counters afterwards. `POST /admin/faults` merges a partial patch into the current
//! settings; `POST /admin/reset` restores the defaults.

use std::time::Duration;

use axum::{
    extract::{Request, State},
    http::{
        header::{AUTHORIZATION, RETRY_AFTER},
        HeaderValue, StatusCode,
    },
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use crate::{
    auth,
    error::ApiError,
    ratelimit::{self, Verdict},
    state::{AppState, Fate},
};

/// The message of an injected delete refusal unless a test overrides it: the one real refusal
/// clients know means "retry later".
pub const DEFAULT_DELETE_REFUSAL_MESSAGE: &str = "Can't discontinue a provisioning instance";

/// Current fault settings (also the JSON answered by `POST /admin/faults`).
#[derive(Debug, Clone, Serialize)]
pub struct Faults {
    /// The next N deploys answer 503 `service_unavailable` (capacity).
    pub deploy_capacity_failures: u64,
    /// The next `count` matching `/v1` requests answer `status` with code `server_error`.
    pub server_errors: Option<ServerErrors>,
    /// Every `/v1` response is delayed by this many milliseconds (0 = off).
    pub slow_ms: u64,
    /// If set, only the next N responses are delayed.
    pub slow_count: Option<u64>,
    /// The next N deployed instances end in status `error` instead of `running`.
    pub error_next_instances: u64,
    /// The next N deployed instances end in status `installation_failed`.
    pub installation_failed_next_instances: u64,
    /// The next N deployed instances disappear (404) when they would become `running`.
    pub vanish_next_instances: u64,
    /// The next N *spot* instances are interrupted: `interrupt_after_ms` after they become
    /// `running`, the provider takes them back (`discontinued`, the script killed), as a spot
    /// preemption does.
    pub interrupt_next_spot_instances: u64,
    pub interrupt_after_ms: u64,
    /// The next N delete actions are refused with `forbidden_action`.
    pub delete_refusals: u64,
    /// The message used for those refusals.
    pub delete_refusal_message: String,
    /// Lifetime of tokens issued from now on.
    pub token_ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerErrors {
    pub count: u64,
    pub status: u16,
    /// Path prefixes (e.g. `/v1/instances`); empty = every `/v1` request.
    pub paths: Vec<String>,
}

/// Body of `POST /admin/faults`: every field optional, merged into [`Faults`].
#[derive(Debug, Default, Deserialize)]
pub struct FaultsPatch {
    pub deploy_capacity_failures: Option<u64>,
    pub server_errors: Option<ServerErrorsPatch>,
    pub slow_ms: Option<u64>,
    pub slow_count: Option<u64>,
    pub error_next_instances: Option<u64>,
    pub installation_failed_next_instances: Option<u64>,
    pub vanish_next_instances: Option<u64>,
    pub interrupt_next_spot_instances: Option<u64>,
    pub interrupt_after_ms: Option<u64>,
    pub delete_refusals: Option<u64>,
    pub delete_refusal_message: Option<String>,
    pub token_ttl_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ServerErrorsPatch {
    pub count: u64,
    pub status: Option<u16>,
    pub paths: Option<Vec<String>>,
}

impl Faults {
    pub fn new(token_ttl_secs: u64) -> Self {
        Self {
            deploy_capacity_failures: 0,
            server_errors: None,
            slow_ms: 0,
            slow_count: None,
            error_next_instances: 0,
            installation_failed_next_instances: 0,
            vanish_next_instances: 0,
            interrupt_next_spot_instances: 0,
            interrupt_after_ms: 1000,
            delete_refusals: 0,
            delete_refusal_message: DEFAULT_DELETE_REFUSAL_MESSAGE.to_string(),
            token_ttl_secs,
        }
    }

    /// Merges a patch; validates before changing anything.
    pub fn apply(&mut self, p: FaultsPatch) -> Result<(), ApiError> {
        if let Some(se) = &p.server_errors {
            let status = se.status.unwrap_or(500);
            if !(400..=599).contains(&status) {
                return Err(ApiError::invalid(
                    "server_errors.status must be an HTTP error status (400-599)",
                ));
            }
        }
        if let Some(v) = p.deploy_capacity_failures {
            self.deploy_capacity_failures = v;
        }
        if let Some(se) = p.server_errors {
            self.server_errors = (se.count > 0).then(|| ServerErrors {
                count: se.count,
                status: se.status.unwrap_or(500),
                paths: se.paths.unwrap_or_default(),
            });
        }
        if let Some(v) = p.slow_ms {
            self.slow_ms = v;
            // A new delay without a count applies to every response.
            if p.slow_count.is_none() {
                self.slow_count = None;
            }
        }
        if let Some(v) = p.slow_count {
            self.slow_count = Some(v);
        }
        if let Some(v) = p.error_next_instances {
            self.error_next_instances = v;
        }
        if let Some(v) = p.installation_failed_next_instances {
            self.installation_failed_next_instances = v;
        }
        if let Some(v) = p.vanish_next_instances {
            self.vanish_next_instances = v;
        }
        if let Some(v) = p.interrupt_next_spot_instances {
            self.interrupt_next_spot_instances = v;
        }
        if let Some(v) = p.interrupt_after_ms {
            self.interrupt_after_ms = v;
        }
        if let Some(v) = p.delete_refusals {
            self.delete_refusals = v;
        }
        if let Some(v) = p.delete_refusal_message {
            self.delete_refusal_message = v;
        }
        if let Some(v) = p.token_ttl_secs {
            self.token_ttl_secs = v;
        }
        Ok(())
    }

    /// The delay to apply to this response, consuming one `slow_count` if set.
    pub fn take_slow(&mut self) -> Option<Duration> {
        if self.slow_ms == 0 {
            return None;
        }
        let delay = Duration::from_millis(self.slow_ms);
        match self.slow_count {
            None => Some(delay),
            Some(0) => {
                self.slow_ms = 0;
                self.slow_count = None;
                None
            }
            Some(n) => {
                if n == 1 {
                    self.slow_ms = 0;
                    self.slow_count = None;
                } else {
                    self.slow_count = Some(n - 1);
                }
                Some(delay)
            }
        }
    }

    /// The injected status for a request to `path`, consuming one if it matches.
    pub fn take_server_error(&mut self, path: &str) -> Option<StatusCode> {
        let se = self.server_errors.as_mut()?;
        if !se.paths.is_empty() && !se.paths.iter().any(|p| path.starts_with(p.as_str())) {
            return None;
        }
        let status = StatusCode::from_u16(se.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        se.count -= 1;
        if se.count == 0 {
            self.server_errors = None;
        }
        Some(status)
    }

    pub fn take_capacity_failure(&mut self) -> bool {
        take(&mut self.deploy_capacity_failures)
    }

    /// Decides, at deploy time, how the new instance's provisioning ends.
    pub fn take_fate(&mut self, is_spot: bool) -> Fate {
        if is_spot && take(&mut self.interrupt_next_spot_instances) {
            Fate::Interrupt
        } else if take(&mut self.error_next_instances) {
            Fate::Error
        } else if take(&mut self.installation_failed_next_instances) {
            Fate::InstallationFailed
        } else if take(&mut self.vanish_next_instances) {
            Fate::Vanish
        } else {
            Fate::Run
        }
    }

    pub fn take_delete_refusal(&mut self) -> Option<String> {
        take(&mut self.delete_refusals).then(|| self.delete_refusal_message.clone())
    }
}

fn take(counter: &mut u64) -> bool {
    if *counter > 0 {
        *counter -= 1;
        true
    } else {
        false
    }
}

/// The route template of a `/v1` path, for the request counters: in
/// `/v1/<collection>/<x>` the `<x>` of a collection with ids is a parameter (an id, or an
/// instance type for availability).
pub fn route_key(path: &str) -> String {
    const WITH_PARAM: &[&str] = &[
        "instances",
        "sshkeys",
        "ssh-keys",
        "scripts",
        "instance-availability",
        "volumes",
    ];
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    // ["", "v1", collection, param, ...]
    if segs.len() >= 4 && segs[1] == "v1" && WITH_PARAM.contains(&segs[2]) {
        let param = if segs[2] == "instance-availability" {
            "{instance_type}"
        } else {
            "{id}"
        };
        let mut out: Vec<&str> = segs[..3].to_vec();
        out.push(param);
        out.extend_from_slice(&segs[4..]);
        out.join("/")
    } else {
        segs.join("/")
    }
}

/// Middleware in front of every `/v1` route, in this order:
/// 1. count the request (`GET /admin/state` → `requests`);
/// 2. injected server error: answered without executing the request;
/// 3. bearer-token check (except on the token endpoint itself);
/// 4. run the handler;
/// 5. injected slowness, applied *after* the handler ran. That is deliberate: a slow deploy
///    whose client times out has still created the instance, which is exactly the situation
///    the provider doc warns about ("never blindly retry a deploy after a timeout").
pub async fn v1_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let key = format!("{} {}", req.method(), route_key(&path));
    let authorization = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = req.method().clone();
    let (slow, injected, auth_result, verdict) = {
        let mut g = state.lock();
        g.requests_total += 1;
        *g.requests_by_route.entry(key).or_default() += 1;
        let slow = g.faults.take_slow();
        let injected = g.faults.take_server_error(&path);
        let auth_result = if path == auth::TOKEN_PATH {
            Ok(())
        } else {
            auth::check_bearer(&g, authorization.as_deref())
        };
        // Only authenticated requests count against the limits (the token endpoint is open).
        let verdict = (path != auth::TOKEN_PATH && auth_result.is_ok() && injected.is_none())
            .then(|| g.rate.admit(&method, &path));
        (slow, injected, auth_result, verdict)
    };
    let response = if let Some(status) = injected {
        tracing::info!(%path, status = status.as_u16(), "injected server error");
        ApiError::server_error(status, "Injected server error").into_response()
    } else if let Err(e) = auth_result {
        e.into_response()
    } else {
        match verdict {
            Some(Verdict::Limited { retry_after_secs }) => {
                tracing::info!(%method, %path, retry_after_secs, "rate limited");
                let mut r = ratelimit::too_many_requests().into_response();
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
                r
            }
            Some(Verdict::Allowed(headers)) => {
                let mut r = next.run(req).await;
                for (k, v) in headers {
                    r.headers_mut().insert(k, v);
                }
                r
            }
            None => next.run(req).await,
        }
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys() {
        assert_eq!(route_key("/v1/instances"), "/v1/instances");
        assert_eq!(route_key("/v1/instances/abc"), "/v1/instances/{id}");
        assert_eq!(
            route_key("/v1/instance-availability/1V100.6V"),
            "/v1/instance-availability/{instance_type}"
        );
        assert_eq!(route_key("/v1/oauth2/token"), "/v1/oauth2/token");
    }

    #[test]
    fn counters_run_out() {
        let mut f = Faults::new(3600);
        f.apply(FaultsPatch {
            server_errors: Some(ServerErrorsPatch {
                count: 2,
                status: Some(502),
                paths: Some(vec!["/v1/instances".into()]),
            }),
            slow_ms: Some(10),
            slow_count: Some(1),
            error_next_instances: Some(1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.take_server_error("/v1/balance"), None);
        assert_eq!(
            f.take_server_error("/v1/instances/x"),
            Some(StatusCode::BAD_GATEWAY)
        );
        assert!(f.take_server_error("/v1/instances").is_some());
        assert!(f.take_server_error("/v1/instances").is_none());
        assert!(f.take_slow().is_some());
        assert!(f.take_slow().is_none());
        assert_eq!(f.take_fate(false), Fate::Error);
        assert_eq!(f.take_fate(false), Fate::Run);
        assert!(f
            .apply(FaultsPatch {
                server_errors: Some(ServerErrorsPatch {
                    count: 1,
                    status: Some(200),
                    paths: None
                }),
                ..Default::default()
            })
            .is_err());
    }
}
