//! The job as stored and as shown.

use crate::money::Micros;
use crate::time::{rfc3339, rfc3339_opt, Millis};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Provisioning,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Provisioning,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Provisioning => "provisioning",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Why a job failed, as a machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    NoCapacity,
    ProvisioningTimeout,
    ScriptFailed,
    InstanceLost,
    ProviderError,
    InsufficientCredits,
    MaxRuntimeExceeded,
    /// The job's cost would have passed its `max_cost`.
    BudgetExceeded,
    /// A secret the job names was deleted before it started (issue 15).
    SecretMissing,
    /// The provider took its spot instance back (issue 15): not the user's failure.
    Interrupted,
}

/// How a job is going to end, decided before its instance is torn down. The job keeps its
/// current status until the teardown is done, then takes `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: JobStatus,
    pub failure_reason: Option<FailureReason>,
    pub error_message: Option<String>,
    pub decided_at: Millis,
}

/// A retired fail-over attempt: the instance, and when its deploy was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredLife {
    pub instance_id: String,
    pub deploy_requested_at: Option<Millis>,
    /// Where the instance lives (`None` in records from before placement spanned providers:
    /// the job's provider).
    #[serde(default)]
    pub provider: Option<String>,
}

/// How one deploy attempt went, as `attempt_log` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Asked for; the provider's answer is not recorded yet.
    Deploying,
    /// The instance exists: the job runs (or ran) here.
    Deployed,
    /// The provider had no capacity: the job moved on (or failed `no_capacity`).
    NoCapacity,
    /// The deploy was refused or the instance never came up.
    Failed,
}

/// One deploy attempt: where, which type, and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub provider: String,
    pub location: String,
    pub instance_type: String,
    pub outcome: AttemptOutcome,
    /// The provider's error text, for an attempt that did not work out.
    pub error: Option<String>,
    /// The retry-policy attempt this deploy belongs to (1-based; a fail-over to another
    /// location stays in the same attempt). 0 in records from before retry policies: 1.
    #[serde(default)]
    pub attempt: u32,
}

/// An attempt that ended and was retried under the job's policy (issue 15): what ended it, and
/// when the next one may deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRecord {
    /// The attempt that ended (1-based).
    pub attempt: u32,
    pub ended_at: Millis,
    pub failure_reason: FailureReason,
    pub error_message: Option<String>,
    pub exit_code: Option<i32>,
    /// What its instance's life was charged (the billing rule, per attempt).
    pub charged_micros: i64,
    /// Backoff: the next attempt deploys no earlier.
    pub next_at: Millis,
    /// `Job::attempts` (deploys) when it ended: the next attempt's fail-over counts from here.
    pub deploys_before: u32,
}

/// What the instance reported through `POST /jobs/{id}/report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub exit_code: i32,
    pub output_tail: String,
    pub reported_at: Millis,
    /// When the wrapper started the script, by the instance's clock (the lifecycle clamps it
    /// between the deploy and the report).
    #[serde(default)]
    pub script_started_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub account_id: String,
    pub name: String,
    pub status: JobStatus,
    pub instance_type: String,
    pub image: String,
    /// The location the user asked for; `None` = any location with capacity.
    pub requested_location: Option<String>,
    /// The location of the current (or last) deploy.
    pub location: Option<String>,
    pub ssh_key_ids: Vec<String>,
    /// The provider's ids of those keys, resolved at submit.
    pub provider_ssh_key_ids: Vec<String>,
    pub startup_script: Option<String>,
    pub auto_shutdown: bool,
    pub max_runtime_seconds: Option<i64>,
    /// The provider of the current (or last) attempt; before the first, the type's provider.
    pub provider: String,
    /// The provider the user asked for; `None` = any enabled provider selling the GPU.
    #[serde(default)]
    pub requested_provider: Option<String>,
    /// Mimiry's price per hour for the type of the current attempt (fixed at submit for the
    /// type named; a fail-over to an equivalent type elsewhere takes that type's price).
    pub price_per_hour_micros: i64,
    pub created_at: Millis,

    /// Deploys started (one per location tried); the hostname carries it so a retried deploy
    /// adopts the instance instead of creating a second.
    pub attempts: u32,
    pub tried_locations: Vec<String>,
    /// Every deploy attempt, oldest first (`GET /jobs/{id}` `attempt_log`).
    #[serde(default)]
    pub attempt_log: Vec<AttemptRecord>,
    pub script_id: Option<String>,
    /// The provider holding `script_id` (`None` in older records: the job's provider).
    #[serde(default)]
    pub script_provider: Option<String>,
    pub instance_id: Option<String>,
    pub ip: Option<String>,
    /// Start of the instance's billable life: just after the deploy call returned.
    pub deployed_at: Option<Millis>,
    /// Last time the instance was seen alive.
    pub instance_seen_at: Option<Millis>,
    /// End of its billable life: when the delete was accepted (or it was last seen, if gone).
    pub instance_ended_at: Option<Millis>,
    /// Instances of earlier attempts that must still be deleted.
    pub retired_instances: Vec<String>,
    /// When Mimiry asked for the current instance (the deploy decision, before the call): the
    /// provider created it no earlier. With [`Job::instance_gone_by`] it bounds the life the
    /// provider may bill us for; what the rule leaves unbilled of it is absorbed.
    #[serde(default)]
    pub deploy_requested_at: Option<Millis>,
    /// When the current instance was known to be gone for sure: the delete call returned, or a
    /// look found it gone.
    #[serde(default)]
    pub instance_gone_by: Option<Millis>,
    /// When the current instance's delete was first decided and its answer is not known yet
    /// (recorded with the decision, before the call): a crash that loses the answer of an
    /// accepted delete must not move the end of the billable life to the retried call.
    #[serde(default)]
    pub delete_decided_at: Option<Millis>,
    /// Retired fail-over attempts still to delete, with their deploy decision times (their
    /// lives are absorbed, see docs/decisions.md "Exact billing").
    #[serde(default)]
    pub retired_lives: Vec<RetiredLife>,
    pub started_at: Option<Millis>,
    pub offline_seen_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// Consecutive transient provider failures; too many end the job `provider_error`.
    pub provider_errors: u32,

    /// Credits reserved for this job and not yet charged.
    pub hold_micros: i64,
    /// Credits charged for this job.
    pub charged_micros: i64,
    /// The user's budget for the job (`max_cost`): the hold never exceeds it and the job is
    /// stopped (`budget_exceeded`) before its cost would pass it.
    #[serde(default)]
    pub max_cost_micros: Option<i64>,
    /// Mimiry's absorbed cost: the value at the job's price of provider time the billing rule
    /// does not charge (abandoned fail-over attempts, time past the hold or budget, the
    /// uncertainty of when the provider acted). Never shown to the user.
    #[serde(default)]
    pub absorbed_micros: i64,

    pub cancel_requested_at: Option<Millis>,
    pub report: Option<Report>,
    pub outcome: Option<Outcome>,
    pub failure_reason: Option<FailureReason>,
    pub error_message: Option<String>,

    /// When the worker should next look at the job.
    pub next_check_at: Millis,
    /// While set and in the future, a worker is performing one of the job's effects and nobody
    /// else may act on the job (see `lifecycle::decide`).
    #[serde(default)]
    pub lease_until: Option<Millis>,
    /// The next look is far off (more than `Timers::park_after_secs`), so no SQS message waits
    /// for it: the reconciler sends one shortly before `next_check_at`, and sooner if the
    /// provider's instance list shows the instance changed. Set by `lifecycle::decide` and
    /// `lifecycle::apply`; cleared by [`Job::look_now`].
    #[serde(default)]
    pub parked: bool,
    /// Optimistic-concurrency version: every write is conditional on it.
    pub version: u64,
    /// The retry policy (issue 15); `None`: an attempt's failure is the job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<super::retry::RetryPolicy>,
    /// On the provider's spot (interruptible) capacity, at its spot price (issue 15).
    #[serde(default)]
    pub spot: bool,
    /// Attempts that ended and were retried, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<RetryRecord>,
    /// The `outcome` being torn down ends this attempt only: once the instance and script are
    /// deleted the next attempt is queued instead of the job settling.
    #[serde(default)]
    pub retrying: bool,
    /// `env` and the names of `secrets` (issue 15); the wrapper fetches them at boot.
    #[serde(default, skip_serializing_if = "crate::secrets::JobEnv::is_empty")]
    pub environment: crate::secrets::JobEnv,
}

impl Job {
    pub fn hostname(&self) -> String {
        hostname(&self.job_id, self.attempts)
    }

    /// The current retry-policy attempt, 1-based (`MIMIRY_ATTEMPT` in the script).
    pub fn attempt(&self) -> u32 {
        self.retries.len() as u32 + 1
    }

    /// Deploys of the current attempt so far (its location fail-over is bounded by
    /// `MAX_DEPLOY_ATTEMPTS`).
    pub fn deploys_this_attempt(&self) -> u32 {
        self.attempts - self.retries.last().map_or(0, |r| r.deploys_before)
    }

    pub fn price_per_hour(&self) -> Micros {
        Micros(self.price_per_hour_micros)
    }

    /// The provider where instance `id` of this job lives: a retired attempt's own, else the
    /// job's current provider. Read off the record, never out of the id.
    pub fn provider_of_instance(&self, id: &str) -> &str {
        self.retired_lives
            .iter()
            .find(|r| r.instance_id == id)
            .and_then(|r| r.provider.as_deref())
            .unwrap_or(&self.provider)
    }

    /// The provider holding the job's startup script.
    pub fn script_provider(&self) -> &str {
        self.script_provider.as_deref().unwrap_or(&self.provider)
    }

    /// Billable seconds of the current instance's life up to `now` (whole seconds, rounded
    /// down: never a second the instance did not live).
    pub fn billable_seconds(&self, now: Millis) -> i64 {
        match self.deployed_at {
            None => 0,
            Some(start) => {
                let end = self.instance_ended_at.unwrap_or(now);
                ((end - start).max(0)) / 1000
            }
        }
    }

    pub fn cost_at(&self, now: Millis) -> Micros {
        cost_of(self.price_per_hour(), self.billable_seconds(now))
    }

    /// The most the provider can have billed us for the current instance by `now`, at the
    /// job's price: from the deploy request (it was created no earlier) until it was known
    /// gone (the delete returned, a look found it gone) — the bounds of what the rule bills.
    pub fn possible_value(&self, now: Millis) -> Micros {
        let Some(deployed) = self.deployed_at else {
            return Micros::ZERO;
        };
        let from = self.deploy_requested_at.unwrap_or(deployed).min(deployed);
        let to = match self.instance_ended_at {
            Some(ended) => self.instance_gone_by.unwrap_or(ended).max(ended),
            None => now,
        };
        cost_of(self.price_per_hour(), (to - from).max(0) / 1000)
    }

    /// When the worker may act on the job next: its next check, but not inside a lease.
    pub fn due_at(&self) -> Millis {
        self.next_check_at.max(self.lease_until.unwrap_or(0))
    }

    /// Makes the job due now (a cancel, a report): the worker acts on it at the next message.
    pub fn look_now(&mut self, now: Millis) {
        self.next_check_at = self.next_check_at.min(now);
        self.parked = false;
    }

    pub fn is_active(&self) -> bool {
        !self.status.is_terminal()
    }

    /// What the job costs: charged once it ended, so far while it runs.
    pub fn cost(&self, now: Millis) -> Micros {
        if self.status.is_terminal() {
            Micros(self.charged_micros)
        } else {
            self.cost_at(now)
        }
    }

    /// The public view: every field of design.md §5.
    pub fn view(&self, now: Millis) -> Value {
        let cost = self.cost(now);
        json!({
            "id": self.job_id,
            "name": self.name,
            "status": self.status.as_str(),
            "instance_type": self.instance_type,
            "image": self.image,
            "location": self.location.as_ref().or(self.requested_location.as_ref()),
            "requested_location": self.requested_location,
            "ssh_key_ids": self.ssh_key_ids,
            "auto_shutdown": self.auto_shutdown,
            "max_runtime_seconds": self.max_runtime_seconds,
            "provider": self.provider,
            "requested_provider": self.requested_provider,
            "attempt_log": self.attempt_log,
            "instance_id": self.instance_id,
            "ip": self.ip,
            "price_per_hour": self.price_per_hour().to_string(),
            "cost": cost.to_string(),
            "held_credits": Micros(self.hold_micros).to_string(),
            "max_cost": self.max_cost_micros.map(|m| Micros(m).to_string()),
            "attempts": self.attempts,
            "attempt": self.attempt(),
            "retry": self.retry,
            "spot": self.spot,
            "retries": self.retries.iter().map(|r| json!({
                "attempt": r.attempt,
                "ended_at": rfc3339(r.ended_at),
                "failure_reason": r.failure_reason,
                "error_message": r.error_message,
                "exit_code": r.exit_code,
                "charged": Micros(r.charged_micros).to_string(),
                "next_attempt_at": rfc3339(r.next_at),
            })).collect::<Vec<_>>(),
            "exit_code": self.report.as_ref().map(|r| r.exit_code),
            "output_tail": self.report.as_ref().map(|r| r.output_tail.clone()),
            "failure_reason": self.failure_reason,
            "error_message": self.error_message,
            // Whether the user asked to cancel, for good: it stays true once the job ended.
            "cancel_requested": self.cancel_requested_at.is_some(),
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339_opt(self.started_at),
            "finished_at": rfc3339_opt(self.finished_at),
            "events": self.events(),
            "env": self.environment.env,
            "secrets": self.environment.secrets,
        })
    }

    /// The job's timeline, oldest first, read off its record (so no write path changes): one
    /// event per milestone the record keeps a time for. Of a job that tried several locations
    /// it shows the last deploy (`attempt` counts them); the provider's error text of a failed
    /// job is on its `finished` event.
    pub fn events(&self) -> Vec<Value> {
        let mut events: Vec<(Millis, Value)> = Vec::new();
        let mut add = |at: Option<Millis>, kind: &str, detail: Value| {
            if let Some(at) = at {
                events.push((
                    at,
                    json!({ "at": rfc3339(at), "type": kind, "detail": detail }),
                ));
            }
        };
        add(
            Some(self.created_at),
            "submitted",
            json!({ "instance_type": self.instance_type, "image": self.image,
                    "location": self.requested_location }),
        );
        add(
            self.deployed_at,
            "deploy_requested",
            json!({ "provider": self.provider, "location": self.location,
                    "attempt": self.attempts, "instance_id": self.instance_id }),
        );
        add(self.started_at, "running", json!({ "ip": self.ip }));
        if let Some(report) = &self.report {
            add(report.script_started_at, "script_started", json!({}));
            add(
                Some(report.reported_at),
                "report_received",
                json!({ "exit_code": report.exit_code }),
            );
        }
        for r in &self.retries {
            add(
                Some(r.ended_at),
                "attempt_failed",
                json!({ "attempt": r.attempt, "failure_reason": r.failure_reason,
                        "error_message": r.error_message, "exit_code": r.exit_code,
                        "charged": Micros(r.charged_micros).to_string(),
                        "next_attempt": r.attempt + 1,
                        "next_attempt_at": rfc3339(r.next_at) }),
            );
        }
        add(self.cancel_requested_at, "cancel_requested", json!({}));
        add(
            self.instance_ended_at,
            "instance_deleted",
            json!({ "instance_id": self.instance_id }),
        );
        if self.status.is_terminal() {
            add(
                self.finished_at,
                "finished",
                json!({ "status": self.status.as_str(),
                        "failure_reason": self.failure_reason,
                        "error_message": self.error_message,
                        "charged": Micros(self.charged_micros).to_string() }),
            );
        }
        // Stable: milestones of the same millisecond keep the order above.
        events.sort_by_key(|(at, _)| *at);
        events.into_iter().map(|(_, e)| e).collect()
    }

    /// The short answer to `POST /jobs`, as the guide shows it.
    pub fn submitted_view(&self) -> Value {
        json!({
            "id": self.job_id,
            "name": self.name,
            "status": self.status.as_str(),
            "instance_type": self.instance_type,
            "image": self.image,
            "location": self.requested_location,
            "created_at": rfc3339(self.created_at),
        })
    }
}

/// A job's budget (`max_cost` on `POST /jobs`): a positive decimal string of credits, like
/// `"12.50"`, at most [`MaxCost::LIMIT`] (a typo must not pass as a budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxCost(Micros);

impl MaxCost {
    pub const LIMIT: Micros = Micros(1_000_000 * crate::money::MICROS_PER_UNIT);

    /// The request's value: anything but such a string is a 400 naming the field.
    pub fn parse(value: &serde_json::Value) -> Result<MaxCost, crate::error::ApiError> {
        let invalid = || {
            crate::error::ApiError::validation(
                "max_cost",
                format!(
                    "max_cost must be a decimal string of credits greater than 0 and at most {}, like \"12.50\"",
                    MaxCost::LIMIT
                ),
            )
        };
        let text = value.as_str().ok_or_else(invalid)?;
        let micros = Micros::parse_decimal(text).map_err(|_| invalid())?;
        if micros.0 <= 0 || micros > MaxCost::LIMIT {
            return Err(invalid());
        }
        Ok(MaxCost(micros))
    }

    pub fn micros(self) -> Micros {
        self.0
    }
}

pub fn hostname(job_id: &str, attempt: u32) -> String {
    format!("mimiry-{job_id}-{attempt}")
}

/// The job id inside a `mimiry-{job}-{attempt}` hostname or a `mimiry-{job}.{account}` tag.
pub fn job_id_of_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("mimiry-")?;
    let id = rest.get(..36)?;
    uuid::Uuid::parse_str(id).ok().map(|_| id)
}

/// `mimiry-{job}.{account}`: the name of a job's startup script and the description of its
/// instances, so the reconciler can find the owning job of anything it meets at the provider.
pub fn owner_tag(job_id: &str, account_id: &str) -> String {
    format!("mimiry-{job_id}.{account_id}")
}

/// (job id, account id) of an [`owner_tag`].
pub fn parse_owner_tag(tag: &str) -> Option<(String, String)> {
    let job = job_id_of_name(tag)?;
    let account = tag.strip_prefix("mimiry-")?.get(36..)?.strip_prefix('.')?;
    uuid::Uuid::parse_str(account).ok()?;
    Some((job.to_string(), account.to_string()))
}

/// Price per hour × seconds, rounded up to the micro (at most one micro in our favour).
pub fn cost_of(price_per_hour: Micros, seconds: i64) -> Micros {
    price_per_hour.mul_div_ceil(seconds, 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(job_id_of_name(&hostname(&id, 3)), Some(id.as_str()));
        let account = uuid::Uuid::new_v4().to_string();
        assert_eq!(
            parse_owner_tag(&owner_tag(&id, &account)),
            Some((id.clone(), account))
        );
        assert_eq!(parse_owner_tag(&hostname(&id, 1)), None);
        assert!(hostname(&id, 12).len() <= 60);
        assert_eq!(job_id_of_name("mimiry-notauuid"), None);
        assert_eq!(job_id_of_name("other-host"), None);
    }

    #[test]
    fn cost_is_per_whole_second() {
        assert_eq!(cost_of(Micros(3_600_000), 1), Micros(1000));
        assert_eq!(cost_of(Micros(1_000_000), 1), Micros(278));
        assert_eq!(cost_of(Micros(1_000_000), 0), Micros(0));
    }
}
