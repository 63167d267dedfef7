//! One askama template per page (`templates/*.html`, auto-escaped), all extending
//! `layout.html`. Each struct is what its page shows; [`Chrome`] is what every page shares.

use askama::Template;
use mimiry_shared::jobs::model::cost_of;
use mimiry_shared::jobs::{Job, JobStatus};
use mimiry_shared::money::Micros;
use mimiry_shared::store::accounts::{Account, LedgerEntry};
use mimiry_shared::store::keys::KeyRecord;
use mimiry_shared::store::ssh_keys::SshKeyRecord;
use mimiry_shared::time::{rfc3339, Millis};

/// The frame of every page: title, header (balance when signed in), flash, CSRF token.
pub struct Chrome {
    pub title: &'static str,
    /// The sidebar entry to highlight.
    pub nav: &'static str,
    pub user: Option<HeaderUser>,
    pub csrf: String,
    pub flash: Option<FlashView>,
    pub error: Option<String>,
    /// Cognito is emulated (moto): no email is sent and any code is accepted.
    pub emulated: bool,
}

pub struct HeaderUser {
    pub email: String,
    pub balance: Amount,
    pub held: Amount,
}

impl HeaderUser {
    pub fn of(account: &Account, email: &str) -> HeaderUser {
        HeaderUser {
            email: email.to_string(),
            balance: Amount::of(account.balance_micros),
            held: Amount::of(account.held_micros),
        }
    }
}

/// A balance as people read it: whole cents, rounded down (never more than there is), with
/// the exact figure the API gives (`99.021`, down to the micro-credit) for a tooltip. Job costs
/// stay exact: they are often fractions of a cent.
pub struct Amount {
    pub cents: String,
    pub exact: String,
}

impl Amount {
    pub fn of(micros: i64) -> Amount {
        const MICROS_PER_CENT: i64 = 10_000;
        Amount {
            cents: Micros(micros.div_euclid(MICROS_PER_CENT) * MICROS_PER_CENT).to_string(),
            exact: Micros(micros).to_string(),
        }
    }
}

pub struct FlashView {
    pub message: &'static str,
    pub success: bool,
}

/// A time for people: `2026-02-01 12:34:56 UTC`.
pub fn when(ms: Millis) -> String {
    rfc3339(ms).replace('T', " ").replace('Z', " UTC")
}

fn when_opt(ms: Option<Millis>) -> String {
    ms.map(when).unwrap_or_else(|| "—".into())
}

// ---- signed out ----

#[derive(Template)]
#[template(path = "signup.html")]
pub struct SignUpPage {
    pub c: Chrome,
    pub email: String,
    pub rules: &'static str,
}

#[derive(Template)]
#[template(path = "verify.html")]
pub struct VerifyPage {
    pub c: Chrome,
    pub email: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LogInPage {
    pub c: Chrome,
    pub email: String,
}

#[derive(Template)]
#[template(path = "forgot.html")]
pub struct ForgotPage {
    pub c: Chrome,
    pub email: String,
}

#[derive(Template)]
#[template(path = "reset.html")]
pub struct ResetPage {
    pub c: Chrome,
    pub email: String,
    pub rules: &'static str,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub c: Chrome,
    pub message: String,
}

// ---- signed in ----

#[derive(Template)]
#[template(path = "logout.html")]
pub struct LogOutPage {
    pub c: Chrome,
}

/// A job as the tables show it.
pub struct JobRow {
    pub id: String,
    pub name: String,
    pub status: &'static str,
    pub instance_type: String,
    pub location: String,
    pub created: String,
    pub cost: String,
}

impl JobRow {
    pub fn of(job: &Job, now: Millis) -> JobRow {
        JobRow {
            id: job.job_id.clone(),
            name: job.name.clone(),
            status: job.status.as_str(),
            instance_type: job.instance_type.clone(),
            location: job
                .location
                .clone()
                .or_else(|| job.requested_location.clone())
                .unwrap_or_else(|| "any".into()),
            created: when(job.created_at),
            cost: job.cost(now).to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub c: Chrome,
    pub balance: Amount,
    pub held: Amount,
    pub jobs: Vec<JobRow>,
}

#[derive(Template)]
#[template(path = "credits.html")]
pub struct CreditsPage {
    pub c: Chrome,
    /// The preset amounts, in whole credits.
    pub presets: Vec<String>,
    pub min: String,
    pub max: String,
    /// The custom amount as typed (when it was refused).
    pub amount: String,
}

#[derive(Template)]
#[template(path = "credits_success.html")]
pub struct CreditsSuccessPage {
    pub c: Chrome,
    pub balance: Amount,
    /// The credits the webhook added, once it has.
    pub credited: Option<String>,
}

/// What an entry does to the credits the account owns (balance + held), as people read it:
/// `+25.00` bought, `-0.42` charged, and no sign for holds and releases, which only move
/// credits between available and held.
pub fn effect(kind: &str, micros: i64) -> String {
    let amount = Micros(micros.abs());
    match kind {
        "purchase" | "credit" | "dispute_won" => format!("+{amount}"),
        "charge" | "refund" | "dispute" => format!("-{amount}"),
        _ => "0.00".into(),
    }
}

/// One ledger entry on the Billing page.
pub struct LedgerRow {
    pub id: String,
    pub at: String,
    pub kind: String,
    pub label: &'static str,
    pub amount: String,
    pub effect: String,
    pub job_id: Option<String>,
    pub note: String,
    /// Stripe's ids behind a purchase, refund or dispute: (what, id).
    pub payment_ids: Vec<(&'static str, String)>,
}

impl LedgerRow {
    pub fn of(e: &LedgerEntry) -> LedgerRow {
        let mut payment_ids = Vec::new();
        if let Some(p) = &e.payment {
            let ids = [
                ("Payment", &p.payment_intent),
                ("Checkout", &p.checkout_session),
                ("Charge", &p.charge),
                ("Dispute", &p.dispute),
            ];
            for (what, id) in ids {
                if let Some(id) = id {
                    payment_ids.push((what, id.clone()));
                }
            }
        }
        LedgerRow {
            id: e.entry_id.clone(),
            at: when(e.at),
            kind: e.kind.clone(),
            label: match e.kind.as_str() {
                "purchase" => "Purchase",
                "credit" => "Credit",
                "hold" => "Hold",
                "charge" => "Charge",
                "release" => "Release",
                "refund" => "Refund",
                "dispute" => "Dispute",
                "dispute_won" => "Dispute won",
                _ => "Other",
            },
            amount: Micros(e.amount_micros).to_string(),
            effect: effect(&e.kind, e.amount_micros),
            job_id: e.job_id.clone(),
            note: e.note.clone(),
            payment_ids,
        }
    }
}

#[derive(Template)]
#[template(path = "billing.html")]
pub struct BillingPage {
    pub c: Chrome,
    pub balance: Amount,
    pub held: Amount,
    pub entries: Vec<LedgerRow>,
    /// `cursor=…` of the next page, when there is one.
    pub next_cursor: Option<String>,
    pub first_page: bool,
}

#[derive(Template)]
#[template(path = "budgets.html")]
pub struct BudgetsPage {
    pub c: Chrome,
    pub spent: Amount,
    pub limit_set: bool,
    /// The form's fields: what is stored, or what was typed when refused.
    pub limit: String,
    pub threshold: String,
    /// The `name` of the field a refused form got wrong ("" when none).
    pub invalid: &'static str,
    pub notice_email: Option<String>,
    /// The notice for the current low balance went out (re-armed above the threshold).
    pub notified: bool,
    pub mail_enabled: bool,
}

impl BudgetsPage {
    /// The current month as people say it: `November 2026`.
    pub fn month(&self) -> String {
        chrono::Utc::now().format("%B %Y").to_string()
    }
}

pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: String,
    pub created: String,
    pub last_used: String,
    pub revoked: Option<String>,
}

impl KeyRow {
    pub fn of(key: &KeyRecord) -> KeyRow {
        KeyRow {
            id: key.key_id.clone(),
            name: key.name.clone(),
            prefix: format!("{}…", key.prefix),
            scopes: key
                .scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            created: when(key.created_at),
            last_used: key.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            revoked: key.revoked_at.map(when),
        }
    }
}

#[derive(Template)]
#[template(path = "api_keys.html")]
pub struct ApiKeysPage {
    pub c: Chrome,
    pub keys: Vec<KeyRow>,
}

/// A scope checkbox: value, element id, what it allows, whether it is ticked.
pub struct ScopeBox {
    pub value: &'static str,
    pub id: String,
    pub help: &'static str,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "api_key_new.html")]
pub struct NewApiKeyPage {
    pub c: Chrome,
    pub name: String,
    pub scopes: Vec<ScopeBox>,
}

#[derive(Template)]
#[template(path = "api_key_created.html")]
pub struct CreatedApiKeyPage {
    pub c: Chrome,
    pub name: String,
    /// The only time the key is ever rendered.
    pub key: String,
    pub scopes: String,
}

#[derive(Template)]
#[template(path = "api_key_revoke.html")]
pub struct RevokeApiKeyPage {
    pub c: Chrome,
    pub key: KeyRow,
}

pub struct SshKeyRow {
    pub id: String,
    pub name: String,
    pub fingerprint: String,
    pub algorithm: String,
    pub created: String,
}

impl SshKeyRow {
    pub fn of(key: &SshKeyRecord) -> SshKeyRow {
        SshKeyRow {
            id: key.ssh_key_id.clone(),
            name: key.name.clone(),
            fingerprint: key.fingerprint.clone(),
            algorithm: key.algorithm.clone(),
            created: when(key.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "ssh_keys.html")]
pub struct SshKeysPage {
    pub c: Chrome,
    pub keys: Vec<SshKeyRow>,
    /// `cursor=…` of the next page, when there is one.
    pub next_cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "ssh_key_new.html")]
pub struct NewSshKeyPage {
    pub c: Chrome,
    pub name: String,
    pub public_key: String,
}

/// A secret on the Secrets page: its name and dates, never its value.
pub struct SecretRow {
    pub name: String,
    pub created: String,
    pub updated: String,
}

impl SecretRow {
    pub fn of(r: &mimiry_shared::store::secrets::SecretRecord) -> SecretRow {
        SecretRow {
            name: r.name.to_string(),
            created: when(r.created_at),
            updated: when(r.updated_at),
        }
    }
}

#[derive(Template)]
#[template(path = "secrets.html")]
pub struct SecretsPage {
    pub c: Chrome,
    pub secrets: Vec<SecretRow>,
    /// The name typed into a refused form (never the value).
    pub name: String,
}

#[derive(Template)]
#[template(path = "secret_delete.html")]
pub struct DeleteSecretPage {
    pub c: Chrome,
    pub name: String,
}

#[derive(Template)]
#[template(path = "ssh_key_delete.html")]
pub struct DeleteSshKeyPage {
    pub c: Chrome,
    pub key: SshKeyRow,
}

#[derive(Template)]
#[template(path = "jobs.html")]
pub struct JobsPage {
    pub c: Chrome,
    pub jobs: Vec<JobRow>,
    pub statuses: Vec<(&'static str, bool)>,
    /// `?status=…&cursor=…` of the next page, when there is one.
    pub next: Option<String>,
    pub filtered: bool,
}

/// One event of a job's timeline ([`Job::events`]): when, what, and its details in words.
pub struct EventRow {
    pub kind: String,
    pub label: String,
    pub at: String,
    pub detail: String,
}

impl EventRow {
    /// An event as `Job::events` gives it (`{at, type, detail}`), for people: a label for the
    /// type and the details that are set, as `name: value` (the provider's error text too).
    pub fn of(event: &serde_json::Value) -> EventRow {
        let kind = event["type"].as_str().unwrap_or_default().to_string();
        let label = match kind.as_str() {
            "submitted" => "Submitted",
            "deploy_requested" => "Deploy requested",
            "running" => "Instance running",
            "script_started" => "Script started",
            "report_received" => "Report received",
            "cancel_requested" => "Cancel requested",
            "instance_deleted" => "Instance deleted",
            "finished" => "Finished",
            other => other,
        }
        .to_string();
        let at = event["at"]
            .as_str()
            .and_then(mimiry_shared::time::parse_rfc3339)
            .map(when)
            .unwrap_or_default();
        let detail = event["detail"]
            .as_object()
            .map(|fields| {
                fields
                    .iter()
                    .filter_map(|(name, value)| match value {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) => {
                            Some(format!("{}: {s}", name.replace('_', " ")))
                        }
                        v => Some(format!("{}: {v}", name.replace('_', " "))),
                    })
                    .collect::<Vec<_>>()
                    .join(" · ")
            })
            .unwrap_or_default();
        EventRow {
            kind,
            label,
            at,
            detail,
        }
    }
}

/// The live log on a job's page: the last lines, and where a follower goes on from.
pub struct LogView {
    pub lines: String,
    pub next_cursor: String,
    pub truncated: bool,
}

/// One step of a job's timeline.
pub struct Step {
    pub label: &'static str,
    pub at: String,
    pub done: bool,
}

#[derive(Template)]
#[template(path = "job.html")]
pub struct JobPage {
    pub c: Chrome,
    pub job: JobRow,
    pub active: bool,
    pub timeline: Vec<Step>,
    /// Every event of the job, oldest first.
    pub events: Vec<EventRow>,
    /// The log's last lines (followed live by app.js while the job runs).
    pub log: LogView,
    pub image: String,
    pub instance_id: String,
    pub ip: String,
    pub started: String,
    pub finished: String,
    pub held: String,
    /// The job's `max_cost`, or "—".
    pub max_cost: String,
    pub price: String,
    pub exit_code: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub failure_reason: Option<String>,
    pub cancel_requested: bool,
    /// A finished job's cost, part by part (empty while it runs or if it never had an
    /// instance).
    pub cost_parts: Vec<CostPart>,
}

/// One part of a finished job's instance time: its seconds at the job's price.
pub struct CostPart {
    pub label: &'static str,
    pub seconds: i64,
    pub cost: String,
}

/// The instance's billable life (deploy returned → delete accepted) cut at the moments the
/// job started and finished running: boot, run, teardown. Each part is rounded as a charge
/// is (whole seconds down, micro-credits up), so the parts can differ from the charge by a
/// micro-credit or two; the charge itself is what the ledger says.
pub fn cost_parts(job: &Job) -> Vec<CostPart> {
    match (
        job.status.is_terminal(),
        job.deployed_at,
        job.instance_ended_at,
    ) {
        (true, Some(start), Some(end)) => split_cost(
            (start, end),
            job.started_at,
            job.finished_at,
            job.price_per_hour(),
        ),
        _ => Vec::new(),
    }
}

/// [`cost_parts`] on the times alone: `life` is (deploy returned, delete accepted).
fn split_cost(
    (start, end): (Millis, Millis),
    started: Option<Millis>,
    finished: Option<Millis>,
    price: Micros,
) -> Vec<CostPart> {
    if end <= start {
        return Vec::new();
    }
    let clamp = |t: Option<Millis>| t.map(|t| t.clamp(start, end));
    let ran = clamp(started);
    let done = clamp(finished).filter(|_| ran.is_some());
    let mut cuts = vec![("boot", start)];
    if let Some(r) = ran {
        cuts.push(("run", r));
    }
    if let Some(d) = done {
        cuts.push(("teardown", d));
    }
    cuts.iter()
        .enumerate()
        .map(|(i, &(label, from))| {
            let to = cuts.get(i + 1).map(|c| c.1).unwrap_or(end);
            let seconds = (to - from) / 1000;
            CostPart {
                label,
                seconds,
                cost: cost_of(price, seconds).to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(v: Vec<CostPart>) -> Vec<(&'static str, i64, String)> {
        v.into_iter()
            .map(|p| (p.label, p.seconds, p.cost))
            .collect()
    }

    #[test]
    fn a_finished_jobs_time_splits_into_boot_run_and_teardown() {
        let price = Micros(3_600_000); // 3.60 an hour: 0.001 a second
        let s = 1_000_000;
        assert_eq!(
            parts(split_cost(
                (s, s + 100_000),
                Some(s + 30_000),
                Some(s + 90_000),
                price
            )),
            [
                ("boot", 30, "0.03".to_string()),
                ("run", 60, "0.06".to_string()),
                ("teardown", 10, "0.01".to_string())
            ]
        );
        // Never ran (cancelled while booting): all of it is boot.
        assert_eq!(
            parts(split_cost((s, s + 5_000), None, Some(s + 4_000), price)),
            [("boot", 5, "0.005".to_string())]
        );
        // Times outside the instance's life are cut to it; no life, no parts.
        assert_eq!(
            parts(split_cost(
                (s, s + 10_000),
                Some(s - 5_000),
                Some(s + 50_000),
                price
            )),
            [
                ("boot", 0, "0.00".to_string()),
                ("run", 10, "0.01".to_string()),
                ("teardown", 0, "0.00".to_string())
            ]
        );
        assert!(split_cost((s, s), Some(s), Some(s), price).is_empty());
    }
}

impl JobPage {
    pub fn of(c: Chrome, job: &Job, log: LogView, now: Millis) -> JobPage {
        let ended = job.status.is_terminal();
        let ran = job.started_at.is_some();
        let final_label = match job.status {
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            _ => "completed",
        };
        let timeline = vec![
            Step {
                label: "queued",
                at: when(job.created_at),
                done: true,
            },
            Step {
                label: "provisioning",
                at: when_opt(job.deployed_at),
                // A deploy was attempted (a queued job cancelled at once never provisioned).
                done: job.deployed_at.is_some() || job.attempts > 0,
            },
            Step {
                label: "running",
                at: when_opt(job.started_at),
                done: ran,
            },
            Step {
                label: final_label,
                at: when_opt(job.finished_at),
                done: ended,
            },
        ];
        JobPage {
            c,
            job: JobRow::of(job, now),
            active: !ended,
            timeline,
            events: job.events().iter().map(EventRow::of).collect(),
            log,
            image: job.image.clone(),
            instance_id: job.instance_id.clone().unwrap_or_else(|| "—".into()),
            ip: job.ip.clone().unwrap_or_else(|| "—".into()),
            started: when_opt(job.started_at),
            finished: when_opt(job.finished_at),
            held: Micros(job.hold_micros).to_string(),
            max_cost: job
                .max_cost_micros
                .map_or_else(|| "—".into(), |m| Micros(m).to_string()),
            price: job.price_per_hour().to_string(),
            exit_code: job
                .report
                .as_ref()
                .map(|r| r.exit_code.to_string())
                .unwrap_or_else(|| "—".into()),
            output: job
                .report
                .as_ref()
                .map(|r| r.output_tail.clone())
                .filter(|o| !o.is_empty()),
            error: job.error_message.clone(),
            // The API's code for it (`script_failed`, …), as `GET /jobs/{id}` shows it.
            failure_reason: job
                .failure_reason
                .and_then(|r| serde_json::to_value(r).ok())
                .and_then(|v| v.as_str().map(str::to_string)),
            cancel_requested: job.cancel_requested_at.is_some(),
            cost_parts: cost_parts(job),
        }
    }
}

#[derive(Template)]
#[template(path = "job_cancel.html")]
pub struct CancelJobPage {
    pub c: Chrome,
    pub job: JobRow,
}

#[derive(Template)]
#[template(path = "support.html")]
pub struct SupportPage {
    pub c: Chrome,
}
