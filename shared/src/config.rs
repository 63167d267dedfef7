//! Configuration read once per process from the environment (set by template.yaml in AWS and by
//! the local stack here). Every timer is configurable so that tests run in seconds.

use crate::money::Micros;
use std::env;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// DynamoDB table holding every item (`TABLE_NAME`).
    pub table_name: String,
    /// SQS queue the worker consumes (`JOBS_QUEUE_URL`).
    pub jobs_queue_url: String,
    /// Secrets Manager id of `{client_id, client_secret}` for the provider (`PROVIDER_SECRET_ID`).
    pub provider_secret_id: String,
    /// Secrets Manager id of the key that signs per-job report tokens (`REPORT_SECRET_ID`).
    pub report_secret_id: String,
    /// The KMS key that seals account secrets (`SECRETS_KMS_KEY_ID`: an id, ARN or alias).
    pub secrets_key_id: String,
    /// DataCrunch/Verda API base (`PROVIDER_BASE_URL`).
    pub provider_base_url: String,
    /// Timeout of one provider HTTP call (`PROVIDER_TIMEOUT_MS`).
    pub provider_timeout: Duration,
    /// Our public base URL, which instances call to report (`PUBLIC_BASE_URL`).
    pub public_base_url: String,
    /// Mimiry's price = provider price × markup (`PRICE_MARKUP`, a decimal such as `1.10`).
    pub price_markup: Micros,
    /// How long catalog answers are reused within one container (`CATALOG_TTL_SECONDS`).
    pub catalog_ttl: Duration,
    /// How long a container reuses a verified API key without reading it again
    /// (`API_KEY_CACHE_SECONDS`, default 30, at most 60): also how long a revoked key may keep
    /// working in a warm container.
    pub api_key_cache_ttl: Duration,
    /// The providers in use, in order of preference (`PROVIDERS`, comma-separated ids, default
    /// `datacrunch`). The first is the one jobs are placed at today.
    pub providers: Vec<ProviderId>,
    /// Lambda Cloud's API base (`LAMBDA_CLOUD_BASE_URL`).
    pub lambda_base_url: String,
    /// Secrets Manager id of `{"api_key": …}` for Lambda Cloud (`LAMBDA_CLOUD_SECRET_ID`).
    pub lambda_secret_id: String,
    pub timers: Timers,
    pub identity: IdentityConfig,
    /// The sender of notices by email (`NOTICE_FROM_EMAIL`, an SES-verified identity); none =
    /// no email is sent.
    pub notice_from_email: Option<String>,
    /// Signed webhooks (issue 13): queue, retries, the local-only loopback flag.
    pub webhooks: crate::webhooks::WebhookConfig,
}

/// The Cognito user pool the dashboard signs people in with, and what a new account gets.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    /// `COGNITO_USER_POOL_ID` (`us-east-1_AbC…`).
    pub user_pool_id: String,
    /// `COGNITO_CLIENT_ID`: the app client without a secret.
    pub client_id: String,
    /// The pool's region (`AWS_REGION`): part of the token issuer.
    pub region: String,
    /// Where the pool's signing keys are (`COGNITO_JWKS_URL`); by default the issuer's
    /// `/.well-known/jwks.json`, or the emulator's when `AWS_ENDPOINT_URL` points at one.
    pub jwks_url: String,
    /// True when Cognito is emulated (`AWS_ENDPOINT_URL` set): the emulator sends no email and
    /// accepts any code, and the pages say so.
    pub emulated: bool,
    /// Secrets Manager id of the key that signs session cookies and CSRF tokens
    /// (`SESSION_SECRET_ID`).
    pub session_secret_id: String,
    /// Credits a self-service account starts with (`SIGNUP_CREDIT`, a decimal; default 0).
    pub signup_credit: Micros,
    /// The dashboard's own origin (`DASHBOARD_URL`, default `PUBLIC_BASE_URL`): cookies are
    /// `Secure` unless it is plain http on loopback.
    pub dashboard_url: String,
}

impl IdentityConfig {
    /// The `iss` of the pool's tokens.
    pub fn issuer(&self) -> String {
        format!(
            "https://cognito-idp.{}.amazonaws.com/{}",
            self.region, self.user_pool_id
        )
    }

    fn from_env(public_base_url: &str) -> IdentityConfig {
        let user_pool_id = var("COGNITO_USER_POOL_ID", "");
        let region = env::var("AWS_REGION")
            .or_else(|_| env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into());
        let endpoint = env::var("AWS_ENDPOINT_URL").ok().filter(|e| !e.is_empty());
        let mut config = IdentityConfig {
            user_pool_id,
            client_id: var("COGNITO_CLIENT_ID", ""),
            region,
            jwks_url: String::new(),
            emulated: endpoint.is_some(),
            session_secret_id: var("SESSION_SECRET_ID", "mimiry/dashboard-session-key"),
            signup_credit: Micros::parse_decimal(&var("SIGNUP_CREDIT", "0"))
                .unwrap_or_else(|e| panic!("SIGNUP_CREDIT: {e}")),
            dashboard_url: var("DASHBOARD_URL", public_base_url),
        };
        config.jwks_url = env::var("COGNITO_JWKS_URL")
            .unwrap_or_else(|_| config.default_jwks_url(endpoint.as_deref()));
        config
    }

    /// The JWKS location for the pool: moto serves it at `{endpoint}/{pool}/.well-known/…`.
    pub fn default_jwks_url(&self, emulator: Option<&str>) -> String {
        match emulator {
            Some(endpoint) => format!(
                "{}/{}/.well-known/jwks.json",
                endpoint.trim_end_matches('/'),
                self.user_pool_id
            ),
            None => format!("{}/.well-known/jwks.json", self.issuer()),
        }
    }
}

/// A provider Mimiry can use. Each has its own credentials (one secret each) and base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderId {
    DataCrunch,
    Lambda,
}

impl ProviderId {
    /// The id used in configuration and in the API (`provider` fields).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderId::DataCrunch => "datacrunch",
            ProviderId::Lambda => "lambda",
        }
    }

    pub fn parse(s: &str) -> Option<ProviderId> {
        match s.trim().to_ascii_lowercase().as_str() {
            "datacrunch" | "verda" => Some(ProviderId::DataCrunch),
            "lambda" | "lambda-cloud" | "lambdalabs" => Some(ProviderId::Lambda),
            _ => None,
        }
    }

    /// `PROVIDERS`: comma-separated ids, duplicates dropped; an unknown id is a configuration
    /// error (a typo must not silently disable a provider), and so is an empty list.
    pub fn parse_list(s: &str) -> Result<Vec<ProviderId>, String> {
        let mut out: Vec<ProviderId> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let id = ProviderId::parse(part).ok_or_else(|| format!("unknown provider `{part}`"))?;
            if !out.contains(&id) {
                out.push(id);
            }
        }
        if out.is_empty() {
            return Err("no provider enabled".into());
        }
        Ok(out)
    }
}

/// The job lifecycle's clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// A job not running this long after its deploy fails `provisioning_timeout`.
    pub provisioning_timeout_secs: i64,
    /// How often the worker looks at a provisioning job. In production this is a safety net:
    /// the reconciler's instance list wakes the job as soon as its instance runs (or fails).
    pub provisioning_poll_secs: i64,
    /// The longest a running job goes without the worker looking at it. Lost or stopped
    /// instances are noticed sooner, by the reconciler's instance listing; the hold and
    /// `max_runtime_seconds` schedule their own looks.
    pub running_poll_secs: i64,
    /// Wait before retrying a step that failed for a transient reason.
    pub retry_delay_secs: i64,
    /// Length of the credit hold taken at submit and on each extension.
    pub hold_secs: i64,
    /// Deploy attempts (locations tried) before `no_capacity`.
    pub max_deploy_attempts: u32,
    /// The reconciler re-drives an active job overdue by this much.
    pub reconcile_grace_secs: i64,
    /// How long a job is reserved for the worker performing one of its effects; longer than
    /// the worker's Lambda timeout, so a live worker never overlaps another.
    pub effect_lease_secs: i64,
    /// A look due further ahead than this is parked (see `Job::parked`) instead of being a
    /// delayed SQS message; at most SQS's 900 s delay. Default: the reconciler's period.
    pub park_after_secs: i64,
    /// How often the reconciler runs (its EventBridge rate); it wakes parked jobs due within
    /// two of its periods.
    pub reconcile_every_secs: i64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            provisioning_timeout_secs: 900,
            provisioning_poll_secs: 300,
            running_poll_secs: 3600,
            retry_delay_secs: 30,
            hold_secs: 3600,
            max_deploy_attempts: 3,
            reconcile_grace_secs: 120,
            effect_lease_secs: 120,
            park_after_secs: 60,
            reconcile_every_secs: 60,
        }
    }
}

/// SQS's longest message delay.
const MAX_INTERVAL_SECS: i64 = crate::queue::MAX_DELAY_SECS;
/// The longest a running job may go unlooked-at by the worker.
const MAX_RUNNING_POLL_SECS: i64 = 24 * 3600;

fn var(name: &str, default: &str) -> String {
    env::var(name).unwrap_or_else(|_| default.to_string())
}

fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
    env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Config {
    pub fn from_env() -> Config {
        let d = Timers::default();
        let markup = var("PRICE_MARKUP", "1.10");
        let public_base_url = var("PUBLIC_BASE_URL", "http://127.0.0.1:3000");
        Config {
            identity: IdentityConfig::from_env(&public_base_url),
            notice_from_email: env::var("NOTICE_FROM_EMAIL")
                .ok()
                .filter(|v| !v.trim().is_empty()),
            webhooks: crate::webhooks::WebhookConfig::from_env(),
            table_name: var("TABLE_NAME", "mimiry"),
            jobs_queue_url: var("JOBS_QUEUE_URL", ""),
            provider_secret_id: var("PROVIDER_SECRET_ID", "mimiry/provider/datacrunch"),
            report_secret_id: var("REPORT_SECRET_ID", "mimiry/report-signing-key"),
            secrets_key_id: var("SECRETS_KMS_KEY_ID", "alias/mimiry-secrets"),
            provider_base_url: var("PROVIDER_BASE_URL", "https://api.verda.com/v1"),
            provider_timeout: Duration::from_millis(num("PROVIDER_TIMEOUT_MS", 10_000)),
            public_base_url,
            price_markup: Micros::parse_decimal(&markup)
                .unwrap_or_else(|e| panic!("PRICE_MARKUP: {e}")),
            catalog_ttl: Duration::from_secs(num("CATALOG_TTL_SECONDS", 30)),
            api_key_cache_ttl: Duration::from_secs(num("API_KEY_CACHE_SECONDS", 30))
                .min(crate::store::keys::MAX_KEY_CACHE_TTL),
            providers: ProviderId::parse_list(&var("PROVIDERS", "datacrunch"))
                .unwrap_or_else(|e| panic!("PROVIDERS: {e}")),
            lambda_base_url: var("LAMBDA_CLOUD_BASE_URL", "https://cloud.lambda.ai/api/v1"),
            lambda_secret_id: var("LAMBDA_CLOUD_SECRET_ID", "mimiry/provider/lambda"),
            timers: Timers {
                provisioning_timeout_secs: num(
                    "PROVISIONING_TIMEOUT_SECONDS",
                    d.provisioning_timeout_secs,
                ),
                // A provisioning look is a delayed SQS message: at most SQS's 900 s delay.
                provisioning_poll_secs: num("PROVISIONING_POLL_SECONDS", d.provisioning_poll_secs)
                    .clamp(1, MAX_INTERVAL_SECS),
                running_poll_secs: num("RUNNING_POLL_SECONDS", d.running_poll_secs)
                    .clamp(1, MAX_RUNNING_POLL_SECS),
                retry_delay_secs: num("RETRY_DELAY_SECONDS", d.retry_delay_secs),
                hold_secs: num("HOLD_SECONDS", d.hold_secs),
                max_deploy_attempts: num("MAX_DEPLOY_ATTEMPTS", d.max_deploy_attempts),
                reconcile_grace_secs: num("RECONCILE_GRACE_SECONDS", d.reconcile_grace_secs),
                effect_lease_secs: num("EFFECT_LEASE_SECONDS", d.effect_lease_secs),
                park_after_secs: num("PARK_AFTER_SECONDS", d.park_after_secs)
                    .clamp(1, MAX_INTERVAL_SECS),
                reconcile_every_secs: num("RECONCILE_EVERY_SECONDS", d.reconcile_every_secs).max(1),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_lists() {
        assert_eq!(
            ProviderId::parse_list("datacrunch, lambda,datacrunch"),
            Ok(vec![ProviderId::DataCrunch, ProviderId::Lambda])
        );
        assert_eq!(
            ProviderId::parse_list("Lambda"),
            Ok(vec![ProviderId::Lambda])
        );
        assert!(ProviderId::parse_list("datacrunch,lamda").is_err());
        assert!(ProviderId::parse_list(" , ").is_err());
        assert_eq!(ProviderId::Lambda.as_str(), "lambda");
    }
}
