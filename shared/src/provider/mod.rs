//! The GPU provider layer: the [`GpuProvider`] trait, its plain data types, and its
//! implementations: DataCrunch (Verda), [`DataCrunchClient`], and Lambda Cloud,
//! [`LambdaCloudClient`] (which shares the transport, pauses and retries of `http.rs`).
//!
//! Facts about the provider API live in `docs/providers/datacrunch.md`; this module is written
//! against that page and is tolerant of real responses that differ from it (unknown fields
//! ignored, ids as text or JSON, numbers and booleans as strings).
//!
//! Error model: every call returns a typed [`ProviderError`]. [`ProviderError::is_transient`]
//! tells a caller whether trying again later can help. Idempotent calls (reads, deletes) are
//! already retried inside the client with backoff; `deploy` and the creates never are.
//!
//! Rate limits: a 429 is [`ProviderError::RateLimited`] with the provider's `Retry-After`. The
//! client remembers the pause per (method, path) — or for the whole project — and answers
//! calls that would hit a paused path with `RateLimited` at once, without sending them;
//! [`GpuProvider::rate_limit_wait`] lets a caller ask before it starts a multi-call step.

pub mod datacrunch;
#[cfg(test)]
mod fake_tests;
mod http;
pub mod lambda;
#[cfg(test)]
mod lambda_fake_tests;
#[cfg(test)]
mod mock_tests;
mod parse;
pub mod placement;
pub mod ratelimit;
pub mod registry;
pub mod retry;
mod token;

pub use datacrunch::{Credentials, DataCrunchClient};
pub use lambda::{ApiKey, LambdaCloudClient};
pub use placement::Placement;
pub use ratelimit::ProviderCall;
pub use registry::ProviderRegistry;
pub use retry::RetryPolicy;

use crate::money::Micros;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A GPU cloud as Mimiry uses it. Implementations are cheap to share across tasks.
#[async_trait::async_trait]
pub trait GpuProvider: Send + Sync {
    /// Stable machine id, e.g. `"datacrunch"`.
    fn id(&self) -> &'static str;
    /// Human name, e.g. `"DataCrunch (Verda)"`.
    fn name(&self) -> &'static str;
    /// The instance-type catalog with on-demand prices (USD).
    async fn instance_types(&self) -> Result<Vec<InstanceTypeInfo>, ProviderError>;
    /// On-demand availability per location, optionally for one location only.
    async fn availability(
        &self,
        location: Option<&str>,
    ) -> Result<Vec<LocationAvailability>, ProviderError>;
    /// Spot availability per location: empty for a provider that sells no spot capacity.
    async fn spot_availability(&self) -> Result<Vec<LocationAvailability>, ProviderError> {
        Ok(Vec::new())
    }
    async fn locations(&self) -> Result<Vec<LocationInfo>, ProviderError>;
    /// OS images, optionally only those compatible with `instance_type`.
    async fn images(&self, instance_type: Option<&str>) -> Result<Vec<ImageInfo>, ProviderError>;
    /// Registers a public key; returns the provider's id. Not retried.
    async fn create_ssh_key(&self, name: &str, public_key: &str) -> Result<String, ProviderError>;
    /// Deletes a key; a key that is already missing is `Ok`.
    async fn delete_ssh_key(&self, id: &str) -> Result<(), ProviderError>;
    /// Creates a startup script; returns the provider's id. Not retried.
    async fn create_script(&self, name: &str, script: &str) -> Result<String, ProviderError>;
    /// Deletes a script; a script that is already missing is `Ok`.
    async fn delete_script(&self, id: &str) -> Result<(), ProviderError>;
    /// The startup scripts named like Mimiry's (`mimiry-…`, the provider's partial-name
    /// filter: callers still check each name), all pages.
    async fn list_scripts(&self) -> Result<Vec<ScriptInfo>, ProviderError>;
    /// Registered SSH keys (id and name), to find one whose creation answer was lost.
    async fn list_ssh_keys(&self) -> Result<Vec<ScriptInfo>, ProviderError>;
    /// Deploys an instance; returns its id. **Never retried**: after an error that may have
    /// reached the provider (timeout, transport, 5xx) find the instance by hostname instead.
    async fn deploy(&self, req: &DeployRequest) -> Result<String, ProviderError>;
    /// `Ok(None)` when the provider does not know the id ("Invalid instance id" / 404).
    async fn get_instance(&self, id: &str) -> Result<Option<InstanceInfo>, ProviderError>;
    /// All non-deleted instances of the account.
    async fn list_instances(&self) -> Result<Vec<InstanceInfo>, ProviderError>;
    /// Deletes an instance and its OS volume permanently (not into the provider's trash).
    /// `os_volume_id` as last read from the instance; `None` makes the client read it first.
    async fn delete_instance(
        &self,
        id: &str,
        os_volume_id: Option<&str>,
    ) -> Result<DeleteOutcome, ProviderError>;
    /// Every volume of the project whose name carries Mimiry's prefix (`mimiry-`), those in
    /// the provider's trash included (they count against the storage quota).
    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, ProviderError>;
    /// Deletes a volume permanently (not into the trash); a volume that is already missing is
    /// `Ok`.
    async fn delete_volume(&self, id: &str) -> Result<(), ProviderError>;
    /// How long `call` is known to be rate limited from now (a 429 seen earlier), if it is.
    /// Lets a caller defer a step that would be refused before spending requests on it.
    fn rate_limit_wait(&self, _call: ProviderCall) -> Option<Duration> {
        None
    }
    /// Whether every launch runs the provider's one image whatever `DeployRequest::image`
    /// says (Lambda: Lambda Stack). A job may then fail over to it whatever its image.
    fn image_is_fixed(&self) -> bool {
        false
    }
    /// Whether an instance keeps `DeployRequest::description` (Mimiry's owner tag). Lambda's
    /// have no description: the reconciler knows their job by the hostname alone.
    fn keeps_descriptions(&self) -> bool {
        true
    }
}

/// What a delete request achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteOutcome {
    /// The provider accepted the delete; the instance goes `deleting` → `discontinued`.
    Accepted,
    /// Unknown id, or already discontinued: nothing left to delete.
    AlreadyGone,
    /// Refused for now (`forbidden_action`, e.g. still provisioning): try again later.
    NotYet,
}

/// A typed provider failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// No capacity for this type in this location right now: try another offer.
    #[error("no capacity: {0}")]
    NoCapacity(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The provider rejected the request (`invalid_request`, `forbidden_action`, other 4xx).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Bad or missing credentials (`unauthorized_request`, 401).
    #[error("provider authentication failed: {0}")]
    Auth(String),
    /// HTTP 402 / `insufficient_funds`: the provider account needs topping up.
    #[error("insufficient provider balance: {0}")]
    InsufficientFunds(String),
    /// 5xx (other than capacity on deploy), 408, or an unreadable success response.
    #[error("provider server error {status}: {message}")]
    Server { status: u16, message: String },
    /// A project quota is full (`forbidden_action` "…quota exceeded": 100 startup scripts, the
    /// storage quota): nothing was created; room comes back as other jobs end.
    #[error("provider quota full: {0}")]
    QuotaExceeded(String),
    /// 429 `rate_limit_exceeded` (or a path known to be paused): nothing was done; ask again
    /// after `retry_after`. Never a failure of the job.
    #[error("provider rate limit: retry after {}s", retry_after.as_secs_f64().ceil())]
    RateLimited { retry_after: Duration },
    #[error("provider request timed out")]
    Timeout,
    /// Connection failure, TLS, DNS, broken body…
    #[error("provider transport error: {0}")]
    Transport(String),
}

impl ProviderError {
    /// Whether the same request may succeed later (server trouble, timeout, network, a rate
    /// limit).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::Server { .. }
                | ProviderError::Timeout
                | ProviderError::Transport(_)
                | ProviderError::RateLimited { .. }
        )
    }

    /// `Retry-After` of a rate-limit answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Short machine-readable name, for logs and stored failure reasons.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::NoCapacity(_) => "no_capacity",
            ProviderError::NotFound(_) => "not_found",
            ProviderError::InvalidRequest(_) => "invalid_request",
            ProviderError::Auth(_) => "auth",
            ProviderError::InsufficientFunds(_) => "insufficient_funds",
            ProviderError::QuotaExceeded(_) => "quota_exceeded",
            ProviderError::Server { .. } => "server_error",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Timeout => "timeout",
            ProviderError::Transport(_) => "transport",
        }
    }
}

/// One entry of the instance-type catalog. Prices are USD per hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceTypeInfo {
    /// e.g. `1H100.80S.30V`.
    pub instance_type: String,
    pub description: String,
    pub price_per_hour: Micros,
    pub spot_price: Option<Micros>,
    /// e.g. `1x H100 SXM5 80GB`.
    pub gpu_description: String,
    /// 0 for CPU-only types.
    pub gpu_count: u32,
    /// Total over all GPUs.
    pub gpu_memory_gb: Option<u32>,
    pub cpu_description: String,
    pub cpu_cores: u32,
    pub memory_gb: Option<u32>,
    /// e.g. `dynamic` when no size is given.
    pub storage_description: String,
    pub storage_gb: Option<u32>,
}

impl InstanceTypeInfo {
    /// The GPU model, read from `gpu_description` (`1x H100 SXM5 80GB` → `H100`,
    /// `8x A100` → `A100`, `1x Tesla V100 16GB` → `V100`): the first word after the count that
    /// is not a brand. `None` for CPU types. The same model reads the same at every provider,
    /// which is what the catalog's `gpu` filter needs.
    pub fn gpu_model(&self) -> Option<&str> {
        const BRANDS: &[&str] = &["nvidia", "tesla", "geforce", "quadro", "rtx"];
        if self.gpu_count == 0 {
            return None;
        }
        let rest = match self.gpu_description.split_once("x ") {
            Some((count, rest)) if count.trim().parse::<u32>().is_ok() => rest,
            _ => self.gpu_description.as_str(),
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        words
            .iter()
            .find(|w| !BRANDS.contains(&w.to_ascii_lowercase().as_str()))
            .or(words.first())
            .copied()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationAvailability {
    /// e.g. `FIN-01`.
    pub location_code: String,
    /// Instance types deployable there now (a hint, not a promise).
    pub instance_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationInfo {
    pub code: String,
    pub name: String,
    pub country_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub id: String,
    pub name: String,
    /// e.g. `ubuntu-22.04-cuda-12.0-docker`; accepted as `DeployRequest::image`.
    pub image_type: String,
    pub details: Vec<String>,
    pub is_default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptInfo {
    pub id: String,
    pub name: String,
}

/// A block volume as the reconciler needs it: enough to tell one of ours that outlived its
/// instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub id: String,
    /// Mimiry names an OS volume `{hostname}-os`, so `mimiry-{job}-{attempt}-os`.
    pub name: String,
    /// The instance it is (or was last) attached to.
    pub instance_id: Option<String>,
    /// In the provider's trash (deleted, not permanently).
    pub in_trash: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    pub instance_type: String,
    /// An image `image_type` string or an image id.
    pub image: String,
    /// Unique per attempt: the key for finding the instance again after an unclear deploy.
    pub hostname: String,
    pub description: String,
    pub ssh_key_ids: Vec<String>,
    pub location_code: String,
    pub startup_script_id: Option<String>,
    /// The script's text, for a provider without stored scripts (Lambda: `user_data`), so
    /// that any process can deploy it, not only the one that called `create_script`.
    /// Providers with stored scripts go by `startup_script_id`.
    pub startup_script: Option<String>,
    pub os_volume_size_gb: u32,
    /// On the provider's spot (interruptible) capacity (issue 15).
    pub is_spot: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub instance_type: String,
    pub status: InstanceStatus,
    pub hostname: String,
    pub description: String,
    /// Location code, e.g. `FIN-01`.
    pub location: String,
    /// `None` until provisioned.
    pub ip: Option<String>,
    pub created_at: Option<String>,
    pub startup_script_id: Option<String>,
    pub price_per_hour: Option<Micros>,
    /// The OS volume, named on delete so it is deleted for good (`None` until provisioned).
    pub os_volume_id: Option<String>,
}

/// An instance status as the provider reports it (snake_case strings on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum InstanceStatus {
    New,
    Ordered,
    Validating,
    Pending,
    Provisioning,
    Running,
    /// Shut down but **still billed**.
    Offline,
    StartingHibernation,
    Hibernating,
    Restoring,
    Deleting,
    Discontinued,
    Error,
    NoCapacity,
    /// The OS installation failed: the instance will never boot.
    InstallationFailed,
    NotFound,
    /// Any other string, kept verbatim (the provider's own `unknown` status lands here too).
    Unknown(String),
}

impl InstanceStatus {
    /// Parses a provider status string; case and surrounding whitespace are ignored, `-` and
    /// spaces count as `_`, and anything unrecognised becomes `Unknown(original)`.
    pub fn parse(s: &str) -> InstanceStatus {
        let norm = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        match norm.as_str() {
            "new" => InstanceStatus::New,
            "ordered" => InstanceStatus::Ordered,
            "validating" => InstanceStatus::Validating,
            "pending" => InstanceStatus::Pending,
            "provisioning" => InstanceStatus::Provisioning,
            "running" => InstanceStatus::Running,
            "offline" => InstanceStatus::Offline,
            "starting_hibernation" => InstanceStatus::StartingHibernation,
            "hibernating" => InstanceStatus::Hibernating,
            "restoring" => InstanceStatus::Restoring,
            "deleting" => InstanceStatus::Deleting,
            "discontinued" => InstanceStatus::Discontinued,
            "error" => InstanceStatus::Error,
            "no_capacity" | "nocapacity" => InstanceStatus::NoCapacity,
            "installation_failed" => InstanceStatus::InstallationFailed,
            "notfound" | "not_found" => InstanceStatus::NotFound,
            _ => InstanceStatus::Unknown(s.trim().to_string()),
        }
    }

    /// The provider's wire string.
    pub fn as_str(&self) -> &str {
        match self {
            InstanceStatus::New => "new",
            InstanceStatus::Ordered => "ordered",
            InstanceStatus::Validating => "validating",
            InstanceStatus::Pending => "pending",
            InstanceStatus::Provisioning => "provisioning",
            InstanceStatus::Running => "running",
            InstanceStatus::Offline => "offline",
            InstanceStatus::StartingHibernation => "starting_hibernation",
            InstanceStatus::Hibernating => "hibernating",
            InstanceStatus::Restoring => "restoring",
            InstanceStatus::Deleting => "deleting",
            InstanceStatus::Discontinued => "discontinued",
            InstanceStatus::Error => "error",
            InstanceStatus::NoCapacity => "no_capacity",
            InstanceStatus::InstallationFailed => "installation_failed",
            InstanceStatus::NotFound => "notfound",
            InstanceStatus::Unknown(s) => s,
        }
    }

    /// Before `running`: new, ordered, validating, pending, provisioning.
    pub fn is_booting(&self) -> bool {
        matches!(
            self,
            InstanceStatus::New
                | InstanceStatus::Ordered
                | InstanceStatus::Validating
                | InstanceStatus::Pending
                | InstanceStatus::Provisioning
        )
    }

    /// Failed for good (`error`, `no_capacity`, `installation_failed`): delete it and try
    /// elsewhere.
    pub fn is_failed(&self) -> bool {
        matches!(
            self,
            InstanceStatus::Error | InstanceStatus::NoCapacity | InstanceStatus::InstallationFailed
        )
    }

    /// Nothing left at the provider: `discontinued`, `notfound`, or the provider's literal
    /// `unknown`. (`deleting` is not gone yet; other unrecognised strings are not gone either.)
    pub fn is_gone(&self) -> bool {
        match self {
            InstanceStatus::Discontinued | InstanceStatus::NotFound => true,
            InstanceStatus::Unknown(s) => s.eq_ignore_ascii_case("unknown"),
            _ => false,
        }
    }
}

impl From<String> for InstanceStatus {
    fn from(s: String) -> Self {
        InstanceStatus::parse(&s)
    }
}

impl From<InstanceStatus> for String {
    fn from(s: InstanceStatus) -> Self {
        s.as_str().to_string()
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_and_helpers() {
        for s in [
            "new",
            "ordered",
            "validating",
            "pending",
            "provisioning",
            "running",
            "offline",
            "starting_hibernation",
            "hibernating",
            "restoring",
            "deleting",
            "discontinued",
            "error",
            "no_capacity",
            "installation_failed",
            "notfound",
        ] {
            let st = InstanceStatus::parse(s);
            assert!(!matches!(st, InstanceStatus::Unknown(_)), "{s}");
            assert_eq!(st.as_str(), s);
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<InstanceStatus>(&json).unwrap(), st);
        }
        assert_eq!(InstanceStatus::parse(" Running "), InstanceStatus::Running);
        assert_eq!(InstanceStatus::parse("not_found"), InstanceStatus::NotFound);
        assert_eq!(
            InstanceStatus::parse("migrating"),
            InstanceStatus::Unknown("migrating".into())
        );
        assert!(InstanceStatus::Ordered.is_booting());
        assert!(InstanceStatus::Provisioning.is_booting());
        assert!(!InstanceStatus::Running.is_booting());
        assert!(InstanceStatus::NoCapacity.is_failed());
        assert!(InstanceStatus::Error.is_failed());
        // A failed OS installation is a failed boot, not a slow one.
        assert!(InstanceStatus::parse("installation_failed").is_failed());
        assert!(!InstanceStatus::parse("installation_failed").is_booting());
        assert!(!InstanceStatus::parse("installation_failed").is_gone());
        assert!(!InstanceStatus::Offline.is_failed());
        assert!(InstanceStatus::Discontinued.is_gone());
        assert!(InstanceStatus::NotFound.is_gone());
        assert!(InstanceStatus::parse("unknown").is_gone());
        assert!(!InstanceStatus::parse("migrating").is_gone());
        assert!(!InstanceStatus::Deleting.is_gone());
    }

    #[test]
    fn gpu_models_read_the_same_across_providers() {
        let t = |description: &str, count: u32| InstanceTypeInfo {
            instance_type: "t".into(),
            description: String::new(),
            price_per_hour: Micros(1),
            spot_price: None,
            gpu_description: description.into(),
            gpu_count: count,
            gpu_memory_gb: None,
            cpu_description: String::new(),
            cpu_cores: 1,
            memory_gb: None,
            storage_description: String::new(),
            storage_gb: None,
        };
        assert_eq!(t("1x H100 SXM5 80GB", 1).gpu_model(), Some("H100"));
        assert_eq!(t("8x A100", 8).gpu_model(), Some("A100"));
        assert_eq!(t("1x Tesla V100 16GB", 1).gpu_model(), Some("V100"));
        assert_eq!(t("8x Tesla V100", 8).gpu_model(), Some("V100"));
        assert_eq!(t("1x RTX A6000", 1).gpu_model(), Some("A6000"));
        assert_eq!(t("", 0).gpu_model(), None);
    }

    #[test]
    fn error_codes_and_transience() {
        assert!(ProviderError::Timeout.is_transient());
        assert!(ProviderError::Transport("x".into()).is_transient());
        assert!(ProviderError::Server {
            status: 502,
            message: "x".into()
        }
        .is_transient());
        assert!(!ProviderError::NoCapacity("x".into()).is_transient());
        assert!(!ProviderError::Auth("x".into()).is_transient());
        assert!(!ProviderError::QuotaExceeded("x".into()).is_transient());
        assert_eq!(
            ProviderError::QuotaExceeded("x".into()).code(),
            "quota_exceeded"
        );
        assert_eq!(ProviderError::NoCapacity("x".into()).code(), "no_capacity");
        assert_eq!(ProviderError::Timeout.code(), "timeout");
        let limited = ProviderError::RateLimited {
            retry_after: Duration::from_secs(49),
        };
        assert!(limited.is_transient());
        assert_eq!(limited.code(), "rate_limited");
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(49)));
        assert_eq!(ProviderError::Timeout.retry_after(), None);
    }
}
