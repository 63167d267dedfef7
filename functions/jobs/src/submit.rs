//! `POST /jobs`: parse the request into a [`JobSpec`] (types that cannot hold invalid values),
//! check it against the catalog, the caller's SSH keys, availability and credits, then write the
//! job and its credit hold in one transaction and hand it to the worker.

use crate::App;
use http::StatusCode;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::jobs::model::{cost_of, MaxCost};
use mimiry_shared::jobs::retry::RetryPolicy;
use mimiry_shared::jobs::{Job, JobStatus};
use mimiry_shared::money::Micros;
use mimiry_shared::names::{is_invisible, DisplayName};
use mimiry_shared::provider::placement::{candidates, catalog_of, find_type, Wanted};
use mimiry_shared::queue::JobRef;
use mimiry_shared::secrets::JobEnv;
use mimiry_shared::store::idempotency::{in_progress, Idempotency};
use mimiry_shared::store::jobs::SubmitError;
use mimiry_shared::time::now_ms;
use serde::Deserialize;

pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
pub const MAX_SSH_KEYS: usize = 10;
pub const MIN_RUNTIME_SECS: i64 = 60;
pub const MAX_RUNTIME_SECS: i64 = 30 * 24 * 3600;

/// The request body as the guide documents it (plus `max_runtime_seconds`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitRequest {
    name: Option<String>,
    instance_type: String,
    image: String,
    location: Option<String>,
    /// An enabled provider's id (`GET /providers`); omitted = wherever the GPU is cheapest.
    provider: Option<String>,
    ssh_key_ids: Option<Vec<String>>,
    startup_script: Option<String>,
    auto_shutdown: Option<bool>,
    max_runtime_seconds: Option<i64>,
    /// A decimal string; read as a value so that a number gets a message naming the field.
    max_cost: Option<serde_json::Value>,
    /// Environment variables of the script (issue 15).
    env: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Names of account secrets to expose as environment variables.
    secrets: Option<Vec<String>>,
    /// `{ "max_attempts": N, "on": [...] }` (issue 15); read as a value so that every fault
    /// gets a message naming its field (`retry.on[2]`).
    retry: Option<serde_json::Value>,
    /// Run on the provider's spot capacity, at its spot price (issue 15).
    spot: Option<bool>,
}

/// A validated job request: everything checkable without I/O has been checked.
struct JobSpec {
    name: Option<DisplayName>,
    instance_type: String,
    image: String,
    location: Option<String>,
    provider: Option<String>,
    ssh_key_ids: Vec<String>,
    startup_script: Option<String>,
    auto_shutdown: bool,
    max_runtime_seconds: Option<i64>,
    max_cost: Option<MaxCost>,
    environment: JobEnv,
    retry: Option<RetryPolicy>,
    spot: bool,
}

fn non_empty(field: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::validation(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if v.len() > 128 || v.chars().any(is_invisible) {
        return Err(ApiError::validation(
            field,
            format!("{field} is not a valid value"),
        ));
    }
    Ok(v.to_string())
}

impl JobSpec {
    fn parse(r: SubmitRequest) -> Result<JobSpec, ApiError> {
        let name = r.name.map(|n| DisplayName::parse("name", &n)).transpose()?;
        let mut ssh_key_ids = r.ssh_key_ids.unwrap_or_default();
        // Every repeat, not only adjacent ones (`dedup`), keeping the caller's order.
        let mut seen = std::collections::HashSet::new();
        ssh_key_ids.retain(|id| seen.insert(id.clone()));
        if ssh_key_ids.len() > MAX_SSH_KEYS {
            return Err(ApiError::validation(
                "ssh_key_ids",
                format!("at most {MAX_SSH_KEYS} SSH keys per job"),
            ));
        }
        if let Some(script) = &r.startup_script {
            if script.contains('\0') {
                // bash cannot hold a NUL in a script: it would be cut there, never run as sent.
                return Err(ApiError::validation(
                    "startup_script",
                    "startup_script must not contain NUL (\\u0000) characters",
                ));
            }
            if script.len() > MAX_SCRIPT_BYTES {
                return Err(ApiError::validation(
                    "startup_script",
                    format!("startup_script is {} bytes; the limit is {MAX_SCRIPT_BYTES} bytes (64 KiB)", script.len()),
                ));
            }
        }
        if let Some(secs) = r.max_runtime_seconds {
            if !(MIN_RUNTIME_SECS..=MAX_RUNTIME_SECS).contains(&secs) {
                return Err(ApiError::validation(
                    "max_runtime_seconds",
                    format!(
                        "max_runtime_seconds must be from {MIN_RUNTIME_SECS} to {MAX_RUNTIME_SECS}"
                    ),
                ));
            }
        }
        Ok(JobSpec {
            name,
            instance_type: non_empty("instance_type", &r.instance_type)?,
            image: non_empty("image", &r.image)?,
            location: r.location.map(|l| non_empty("location", &l)).transpose()?,
            provider: r.provider.map(|p| non_empty("provider", &p)).transpose()?,
            ssh_key_ids,
            startup_script: r.startup_script.filter(|s| !s.trim().is_empty()),
            // Omitted = true: a forgotten flag must not leave a GPU billing for hours.
            auto_shutdown: r.auto_shutdown.unwrap_or(true),
            max_runtime_seconds: r.max_runtime_seconds,
            max_cost: r
                .max_cost
                .filter(|v| !v.is_null())
                .map(|v| MaxCost::parse(&v))
                .transpose()?,
            environment: JobEnv::parse(r.env, r.secrets)?,
            retry: r
                .retry
                .filter(|v| !v.is_null())
                .map(|v| RetryPolicy::parse(&v))
                .transpose()?,
            spot: r.spot.unwrap_or(false),
        })
    }
}

pub async fn submit(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let spec = JobSpec::parse(ctx.json()?)?;
    let idempotency = Idempotency::of(ctx, "POST /jobs")?;
    if let Some(reply) = idempotency.earlier_answer(&app.store).await? {
        return Ok(reply);
    }
    let result = create_job(app, ctx.caller().account_id.clone(), spec, &idempotency).await;
    idempotency.settle(&app.store, result).await
}

/// Why the store refused the job and its hold, as the API says it.
fn refusal(e: SubmitError, hold: Micros) -> ApiError {
    match e {
        SubmitError::InsufficientCredits { available } => ApiError::InsufficientCredits {
            required: hold.to_string(),
            available: available.to_string(),
        },
        SubmitError::SpendLimitReached { limit, spent } => ApiError::MonthlySpendLimitReached {
            limit: limit.to_string(),
            spent: spent.to_string(),
            required: hold.to_string(),
        },
        SubmitError::IdempotencyKeyTaken => in_progress(),
        SubmitError::Other(e) => e,
    }
}

/// Checks the spec against the catalog, keys, capacity and credits, then writes the job with
/// its hold (and the idempotency record) and queues it.
async fn create_job(
    app: &App,
    account_id: String,
    spec: JobSpec,
    idempotency: &Idempotency,
) -> Result<Reply, ApiError> {
    // The provider, if named: one of those enabled.
    if let Some(p) = &spec.provider {
        if catalog_of(&app.catalogs, p).is_none() {
            let enabled: Vec<&str> = app.catalogs.iter().map(|c| c.provider().id()).collect();
            return Err(ApiError::validation(
                "provider",
                format!(
                    "Unknown provider `{p}`: enabled providers are {} (see GET /providers)",
                    enabled.join(", ")
                ),
            ));
        }
    }
    // Against the catalog: type (sold by the provider named, or by the first that sells it),
    // image (compatible with the type), location.
    let (catalog, instance_type) =
        find_type(&app.catalogs, &spec.instance_type, spec.provider.as_deref()).await?;
    let compatible = catalog.images(Some(&spec.instance_type)).await?.value;
    if !compatible
        .iter()
        .any(|i| i.image_type == spec.image || i.id == spec.image)
    {
        let exists = catalog
            .images(None)
            .await?
            .value
            .iter()
            .any(|i| i.image_type == spec.image || i.id == spec.image);
        let message = if exists {
            format!(
                "Image `{}` cannot run on instance_type `{}`: see GET /images?instance_type={}",
                spec.image, spec.instance_type, spec.instance_type
            )
        } else {
            format!("Unknown image `{}`: see GET /images", spec.image)
        };
        return Err(ApiError::validation("image", message));
    }
    if let Some(location) = &spec.location {
        if !catalog
            .locations()
            .await?
            .value
            .iter()
            .any(|l| &l.code == location)
        {
            return Err(ApiError::validation(
                "location",
                format!("Unknown location `{location}`: see GET /locations"),
            ));
        }
    }

    // A spot job pays the spot price (marked up like on-demand), where the type has one.
    let provider_price = if spec.spot {
        instance_type.spot_price.ok_or_else(|| {
            ApiError::validation(
                "spot",
                format!(
                    "instance_type `{}` is not sold as spot capacity by provider `{}` (its spot_price in GET /instances is null)",
                    spec.instance_type,
                    catalog.provider().id()
                ),
            )
        })?
    } else {
        instance_type.price_per_hour
    };

    // The caller's own SSH keys, resolved to the provider's ids.
    let mut provider_ssh_key_ids = Vec::with_capacity(spec.ssh_key_ids.len());
    for id in &spec.ssh_key_ids {
        let key = match uuid::Uuid::parse_str(id) {
            Ok(_) => app.store.get_ssh_key(&account_id, id).await?,
            Err(_) => None,
        };
        let key = key.ok_or_else(|| ApiError::SshKeyNotFound {
            id: id.clone(),
            as_resource: false,
        })?;
        provider_ssh_key_ids.push(key.provider_key_id);
    }

    // The account's own secrets, by name (their values are read only at boot).
    mimiry_shared::jobs::env::check_secrets_exist(&app.store, &account_id, &spec.environment)
        .await?;

    // Capacity where asked, or anywhere the job may go (its type, or an equivalent elsewhere
    // when neither a provider nor a location is named).
    let provider_id = catalog.provider().id();
    let pinned = spec.provider.is_some() || spec.location.is_some();
    let places = candidates(
        &app.catalogs,
        &Wanted {
            provider: provider_id,
            instance_type: &spec.instance_type,
            image: &spec.image,
            pinned,
            spot: spec.spot,
        },
    )
    .await;
    let has_capacity = match &spec.location {
        Some(l) => places.iter().any(|p| &p.location == l),
        None => !places.is_empty(),
    };
    if !has_capacity {
        return Err(ApiError::NoAvailableInstances {
            instance_type: spec.instance_type.clone(),
            location: spec.location.clone(),
        });
    }

    // The hold: the price for min(1 hour, max runtime) — at the dearest place the job may go,
    // so that a fail-over to an equivalent type elsewhere is covered too.
    let price = catalog.price(provider_price);
    let hold_price = places
        .iter()
        .map(|p| Micros(p.price_per_hour_micros))
        .fold(price, Micros::max);
    let hold_secs = spec
        .max_runtime_seconds
        .map_or(app.timers.hold_secs, |m| m.min(app.timers.hold_secs));
    let hold = budget_hold(
        cost_of(hold_price, hold_secs),
        spec.max_cost,
        price,
        app.timers.retry_delay_secs,
    )?;

    let now = now_ms();
    let job_id = uuid::Uuid::now_v7().to_string();
    let job = Job {
        name: spec
            .name
            .map(DisplayName::into_string)
            .unwrap_or_else(|| format!("job-{}", &job_id[job_id.len() - 8..])),
        job_id,
        account_id: account_id.clone(),
        status: JobStatus::Queued,
        instance_type: spec.instance_type,
        image: spec.image,
        requested_location: spec.location,
        location: None,
        ssh_key_ids: spec.ssh_key_ids,
        provider_ssh_key_ids,
        startup_script: spec.startup_script,
        auto_shutdown: spec.auto_shutdown,
        max_runtime_seconds: spec.max_runtime_seconds,
        provider: provider_id.to_string(),
        requested_provider: spec.provider,
        price_per_hour_micros: price.0,
        created_at: now,
        attempts: 0,
        tried_locations: Vec::new(),
        attempt_log: Vec::new(),
        script_id: None,
        script_provider: None,
        instance_id: None,
        ip: None,
        deployed_at: None,
        instance_seen_at: None,
        instance_ended_at: None,
        retired_instances: Vec::new(),
        deploy_requested_at: None,
        instance_gone_by: None,
        delete_decided_at: None,
        retired_lives: Vec::new(),
        started_at: None,
        offline_seen_at: None,
        finished_at: None,
        provider_errors: 0,
        hold_micros: hold.0,
        charged_micros: 0,
        max_cost_micros: spec.max_cost.map(|m| m.micros().0),
        absorbed_micros: 0,
        cancel_requested_at: None,
        report: None,
        outcome: None,
        failure_reason: None,
        error_message: None,
        next_check_at: now,
        lease_until: None,
        parked: false,
        environment: spec.environment,
        retry: spec.retry,
        spot: spec.spot,
        retries: Vec::new(),
        retrying: false,
        version: 0,
    };
    let reply = Reply::with_status(StatusCode::CREATED, job.submitted_view());
    let record = idempotency.record(&reply);
    app.store
        .submit_job(&job, record.as_ref())
        .await
        .map_err(|e| refusal(e, hold))?;
    app.notices
        .after_balance_change(&app.store, &account_id)
        .await;
    let job_ref = JobRef::new(account_id, job.job_id.clone());
    if let Err(e) = app.queue.send(&job_ref, 0).await {
        // Not lost: the job is in the active index with next_check_at = now, and the
        // reconciler re-drives it within a minute.
        tracing::warn!(job_id = %job.job_id, error = %e, "could not enqueue a new job; the reconciler will");
    }
    Ok(reply)
}

/// The hold at submit under the job's budget: never more than `max_cost`. A budget below the
/// price of two retry delays is refused (402): the lifecycle stops a job a retry delay before
/// its hold runs out, so such a job would be stopped at its first look, having paid for its
/// boot and nothing else (docs/decisions.md, "Exact billing").
fn budget_hold(
    hold: Micros,
    max_cost: Option<MaxCost>,
    price: Micros,
    retry_delay_secs: i64,
) -> Result<Micros, ApiError> {
    let Some(max_cost) = max_cost else {
        return Ok(hold);
    };
    let minimum = cost_of(price, 2 * retry_delay_secs);
    if max_cost.micros() < minimum {
        return Err(ApiError::InsufficientBudget {
            max_cost: max_cost.micros().to_string(),
            minimum: minimum.to_string(),
        });
    }
    Ok(hold.min(max_cost.micros()))
}

#[cfg(test)]
mod budget_tests {
    use super::*;
    use serde_json::json;

    fn max_cost(s: &str) -> Option<MaxCost> {
        Some(MaxCost::parse(&json!(s)).unwrap())
    }

    #[test]
    fn the_hold_never_exceeds_max_cost_and_a_budget_below_the_minimum_is_a_402() {
        let price = Micros(3_600_000); // 1000 µ a second
        let hold = Micros(3_600_000);
        assert_eq!(budget_hold(hold, None, price, 30).unwrap(), hold);
        assert_eq!(
            budget_hold(hold, max_cost("1.25"), price, 30).unwrap(),
            Micros(1_250_000)
        );
        assert_eq!(
            budget_hold(hold, max_cost("12.50"), price, 30).unwrap(),
            hold
        );
        // Two retry delays of 30 s = 60 000 µ: exactly that is enough, a micro less is not.
        assert_eq!(
            budget_hold(hold, max_cost("0.06"), price, 30).unwrap(),
            Micros(60_000)
        );
        let refused = budget_hold(hold, max_cost("0.059999"), price, 30).unwrap_err();
        assert_eq!(refused.status().as_u16(), 402);
        assert_eq!(refused.code(), "insufficient_budget");
    }

    #[test]
    fn max_cost_must_be_a_positive_decimal_string() {
        for bad in [
            json!(12.5),
            json!("-1"),
            json!("0"),
            json!("abc"),
            json!("1.0000001"),
            json!("1000000.01"),
            json!(""),
        ] {
            let e = MaxCost::parse(&bad).unwrap_err();
            assert_eq!(e.code(), "validation_error", "{bad}");
            assert!(e.to_string().contains("max_cost"), "{bad}: {e}");
        }
        assert_eq!(
            MaxCost::parse(&json!("12.50")).unwrap().micros(),
            Micros(12_500_000)
        );
    }
}
