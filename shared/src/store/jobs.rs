//! Job items, and the money that moves with them. Every job write is conditional on the job's
//! `version`; when it moves credits, the account update and the ledger entries are in the same
//! `TransactWriteItems`, so job state and money change together or not at all.

use super::accounts::ACCOUNT_SK;
use super::budgets;
use super::cursor;
use super::idempotency::IdempotencyRecord;
use super::{account_pk, aws_err, cancelled_conditions, from_item, n, s, to_item, Item, Store};
use crate::error::ApiError;
use crate::jobs::{Job, JobStatus, Report};
use crate::money::Micros;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

pub const ACTIVE_INDEX: &str = "GSI1";
pub const ACTIVE_PK: &str = "ACTIVE";
/// Attempts of a submit whose account's spend limit changed while it was being written.
const SUBMIT_ATTEMPTS: u32 = 3;

pub fn job_sk(job_id: &str) -> String {
    format!("JOB#{job_id}")
}

/// An active job as the active index lists it (the index holds keys only, so everything the
/// reconciler needs is in the sort key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveJob {
    pub due_at: i64,
    pub account_id: String,
    pub job_id: String,
    pub watch: Watch,
}

/// How the job's next look comes about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// A delayed SQS message is on its way (the reconciler re-drives it if overdue).
    Queue,
    /// Parked (`Job::parked`): the reconciler wakes it shortly before it is due, and at once
    /// if the provider's list shows its instance not running any more.
    Running,
    /// Parked while provisioning: woken as soon as the instance runs, stops, fails or vanishes.
    Booting,
    /// Parked with no instance to watch: woken when due.
    Timer,
}

impl Watch {
    fn of(job: &Job) -> Watch {
        match (job.parked, job.status) {
            (false, _) => Watch::Queue,
            (true, JobStatus::Running) => Watch::Running,
            (true, JobStatus::Provisioning) => Watch::Booting,
            (true, _) => Watch::Timer,
        }
    }

    /// Each watch and its one-letter code in the sort key.
    const CODES: [(Watch, &'static str); 4] = [
        (Watch::Queue, "q"),
        (Watch::Running, "r"),
        (Watch::Booting, "b"),
        (Watch::Timer, "t"),
    ];

    fn code(self) -> &'static str {
        Self::CODES
            .iter()
            .find_map(|(w, c)| (*w == self).then_some(*c))
            .expect("every watch has a code")
    }

    fn from_code(code: &str) -> Option<Watch> {
        Self::CODES
            .iter()
            .find_map(|(w, c)| (*c == code).then_some(*w))
    }

    pub fn is_parked(self) -> bool {
        self != Watch::Queue
    }
}

/// The active-jobs index key, `{due_at}#{account}#{job}#{watch}` ([`Watch`]): overdue jobs
/// sort first.
pub fn active_sort_key(job: &Job) -> String {
    format!(
        "{:013}#{}#{}#{}",
        job.due_at().max(0),
        job.account_id,
        job.job_id,
        Watch::of(job).code()
    )
}

/// Parses an [`active_sort_key`] back.
pub fn parse_active_sort_key(sk: &str) -> Option<ActiveJob> {
    let mut parts = sk.splitn(4, '#');
    let due_at = parts.next()?.parse().ok()?;
    let account_id = parts.next()?.to_string();
    let job_id = parts.next()?.to_string();
    let watch = Watch::from_code(parts.next()?)?;
    Some(ActiveJob {
        due_at,
        account_id,
        job_id,
        watch,
    })
}

/// Why saving a job did not happen.
#[derive(Debug)]
pub enum SaveError {
    /// Someone else wrote the job first (or the balance moved): read it again.
    Conflict,
    Other(ApiError),
}

impl From<ApiError> for SaveError {
    fn from(e: ApiError) -> Self {
        SaveError::Other(e)
    }
}

/// Why a submit was refused.
#[derive(Debug)]
pub enum SubmitError {
    InsufficientCredits {
        available: Micros,
    },
    /// The hold would take the month's spend past the account's monthly spend limit.
    SpendLimitReached {
        limit: Micros,
        spent: Micros,
    },
    /// The idempotency key was used by a concurrent request first.
    IdempotencyKeyTaken,
    Other(ApiError),
}

/// A page of jobs, newest first.
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<String>,
}

fn job_item(job: &Job) -> Result<Item, ApiError> {
    let mut item = to_item(job, account_pk(&job.account_id), job_sk(&job.job_id))?;
    if job.is_active() {
        item.insert("GSI1PK".into(), s(ACTIVE_PK));
        item.insert("GSI1SK".into(), s(active_sort_key(job)));
    }
    Ok(item)
}

fn cursor_encode(job_id: &str) -> String {
    cursor::encode(job_id)
}

fn cursor_decode(c: &str) -> Result<String, ApiError> {
    let id = cursor::decode(c)?;
    uuid::Uuid::parse_str(&id).map_err(|_| cursor::invalid())?;
    Ok(id)
}

impl Store {
    /// The account update and ledger entries for moving a job's hold/charge from `old` to `new`.
    /// `limit`: a submit's check of the monthly spend limit it read (see [`super::budgets`]).
    fn money_items(
        &self,
        old_hold: i64,
        old_charged: i64,
        new: &Job,
        limit: Option<Option<Micros>>,
    ) -> Result<Vec<TransactWriteItem>, ApiError> {
        let d_hold = new.hold_micros - old_hold;
        let d_charged = new.charged_micros - old_charged;
        let d_balance = -(d_hold + d_charged);
        if d_hold == 0 && d_charged == 0 {
            return Ok(Vec::new());
        }
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("PK", s(account_pk(&new.account_id)))
            .key("SK", s(ACCOUNT_SK))
            .update_expression(format!(
                "ADD balance_micros :db, held_micros :dh, charged_micros :dc SET {}",
                budgets::SPEND_SET
            ))
            .expression_attribute_values(":db", n(d_balance))
            .expression_attribute_values(":dh", n(d_hold))
            .expression_attribute_values(":dc", n(d_charged));
        // The month's spend moves by what the balance gives up (holds and charges).
        update = budgets::spend_values(update, -d_balance, crate::time::now_ms());
        let mut condition = String::from("attribute_exists(PK)");
        if d_balance < 0 {
            condition.push_str(" AND balance_micros >= :need");
            update = update.expression_attribute_values(":need", n(-d_balance));
        }
        if let Some(limit) = limit {
            let (with_values, clause) = budgets::limit_condition(update, limit, Micros(-d_balance));
            update = with_values;
            condition = format!("{condition} AND {clause}");
        }
        update = update.condition_expression(condition);
        let mut items = vec![TransactWriteItem::builder()
            .update(update.build().map_err(ApiError::internal)?)
            .build()];
        let job = Some(new.job_id.as_str());
        if d_charged != 0 {
            items.push(self.ledger_put(
                &new.account_id,
                "charge",
                Micros(d_charged),
                job,
                "instance time",
            )?);
        }
        let released = d_hold + d_charged; // hold change not explained by the charge
        if released > 0 {
            items.push(self.ledger_put(
                &new.account_id,
                "hold",
                Micros(released),
                job,
                "credits reserved",
            )?);
        } else if released < 0 {
            items.push(self.ledger_put(
                &new.account_id,
                "release",
                Micros(-released),
                job,
                "unused hold released",
            )?);
        }
        Ok(items)
    }

    /// Writes a new job and its credit hold in one transaction (plus the idempotency record),
    /// if the balance covers the hold and the hold fits in the monthly spend limit.
    pub async fn submit_job(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<(), SubmitError> {
        // The limit as read now; the transaction's condition insists it is still the limit.
        let mut limit = self
            .get_account(&job.account_id)
            .await
            .map_err(SubmitError::Other)?
            .and_then(|a| a.monthly_spend_limit_micros)
            .map(Micros);
        // A new attempt only when the limit changed between our read and the write.
        for _ in 0..SUBMIT_ATTEMPTS {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(job_item(job).map_err(SubmitError::Other)?))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .map_err(|e| SubmitError::Other(ApiError::internal(e)))?;
            let mut items = vec![TransactWriteItem::builder().put(put).build()];
            let money = self
                .money_items(0, 0, job, Some(limit))
                .map_err(SubmitError::Other)?;
            let account_index = if money.is_empty() { usize::MAX } else { 1 };
            items.extend(money);
            let idem_index = items.len();
            if let Some(record) = idempotency {
                items.push(
                    self.idempotency_put(&job.account_id, record)
                        .map_err(SubmitError::Other)?,
                );
            }
            let e = match self.transact(items).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let failed = cancelled_conditions(&e).unwrap_or_default();
            if failed.get(idem_index) == Some(&true) {
                return Err(SubmitError::IdempotencyKeyTaken);
            }
            if failed.get(account_index) != Some(&true) {
                return Err(SubmitError::Other(aws_err(e)));
            }
            // Which of the account's conditions failed: read what it holds now.
            let now = crate::time::now_ms();
            let Some((account, spent)) = self
                .account_and_spend(&job.account_id, now)
                .await
                .map_err(SubmitError::Other)?
            else {
                return Err(SubmitError::InsufficientCredits {
                    available: Micros::ZERO,
                });
            };
            if account.balance_micros < job.hold_micros {
                return Err(SubmitError::InsufficientCredits {
                    available: Micros(account.balance_micros),
                });
            }
            let now_limit = account.monthly_spend_limit_micros.map(Micros);
            if let Some(l) = now_limit {
                if spent.0 + job.hold_micros > l.0 {
                    return Err(SubmitError::SpendLimitReached { limit: l, spent });
                }
            }
            limit = now_limit;
        }
        Err(SubmitError::Other(ApiError::Conflict {
            code: "busy",
            message: "The account's settings changed during the request; retry".into(),
        }))
    }

    pub async fn get_job(&self, account_id: &str, job_id: &str) -> Result<Option<Job>, ApiError> {
        self.get(account_pk(account_id), job_sk(job_id))
            .await?
            .map(from_item)
            .transpose()
    }

    /// Saves `new` over `old` if nobody else wrote the job since `old` was read, moving credits
    /// by the difference of their holds and charges. Returns the saved job (version + 1).
    pub async fn save_job(&self, old: &Job, new: &Job) -> Result<Job, SaveError> {
        let mut saved = new.clone();
        saved.version = old.version + 1;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(job_item(&saved)?))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(old.version))
            .build()
            .map_err(ApiError::internal)?;
        let money = self.money_items(old.hold_micros, old.charged_micros, &saved, None)?;
        let result = if money.is_empty() {
            self.db
                .put_item()
                .table_name(&self.table)
                .set_item(put.item().clone().into())
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(old.version))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    let busy = e
                        .as_service_error()
                        .is_some_and(|se| se.is_transaction_conflict_exception());
                    if super::is_condition_failure(&e) || busy {
                        SaveError::Conflict
                    } else {
                        SaveError::Other(aws_err(e))
                    }
                })
        } else {
            let mut items = vec![TransactWriteItem::builder().put(put).build()];
            items.extend(money);
            self.transact(items)
                .await
                .map_err(|e| match cancelled_conditions(&e) {
                    Some(failed) if failed.iter().any(|f| *f) => SaveError::Conflict,
                    _ => SaveError::Other(aws_err(e)),
                })
        };
        result.map(|_| saved)
    }

    /// Newest first; `status` filters; `limit` ≤ 100.
    pub async fn list_jobs(
        &self,
        account_id: &str,
        status: Option<JobStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<JobPage, ApiError> {
        let mut start: Option<Item> = match cursor {
            Some(c) => {
                let id = cursor_decode(c)?;
                Some(
                    [
                        ("PK".to_string(), s(account_pk(account_id))),
                        ("SK".to_string(), s(job_sk(&id))),
                    ]
                    .into_iter()
                    .collect(),
                )
            }
            None => None,
        };
        let mut jobs = Vec::new();
        loop {
            let mut query = self
                .db
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
                .expression_attribute_values(":pk", s(account_pk(account_id)))
                .expression_attribute_values(":p", s("JOB#"))
                .scan_index_forward(false)
                .limit((limit - jobs.len()) as i32)
                .set_exclusive_start_key(start.take());
            if let Some(st) = status {
                query = query
                    .filter_expression("#st = :st")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":st", s(st.as_str()));
            }
            let out = query.send().await.map_err(aws_err)?;
            for item in out.items.unwrap_or_default() {
                jobs.push(from_item::<Job>(item)?);
            }
            let last = out.last_evaluated_key.filter(|k| !k.is_empty());
            match last {
                Some(k) if jobs.len() < limit => start = Some(k),
                Some(k) => {
                    let next = match k.get("SK") {
                        Some(AttributeValue::S(sk)) => sk.strip_prefix("JOB#").map(cursor_encode),
                        _ => None,
                    };
                    return Ok(JobPage {
                        jobs,
                        next_cursor: next,
                    });
                }
                None => {
                    return Ok(JobPage {
                        jobs,
                        next_cursor: None,
                    })
                }
            }
        }
    }

    /// Records an instance's report once. Returns the job as it now stands.
    pub async fn record_report(&self, job: &Job, report: &Report) -> Result<Job, SaveError> {
        let mut new = job.clone();
        new.report = Some(report.clone());
        // Due now: the worker drops a message for a job that is not due, so without this the
        // report would wait for the next scheduled check (up to a running poll, instance billing).
        new.look_now(report.reported_at);
        self.save_job(job, &new).await
    }

    /// Every active job, soonest due first (the reconciler's full read, every few minutes).
    pub async fn active_jobs(&self) -> Result<Vec<ActiveJob>, ApiError> {
        self.query_active(None).await
    }

    /// The active jobs due before `before` (overdue ones first): the reconciler's read on every
    /// run. The index's sort key starts with the due time, so this reads only what is due,
    /// however many jobs are active.
    pub async fn active_jobs_due_before(&self, before: i64) -> Result<Vec<ActiveJob>, ApiError> {
        self.query_active(Some(before)).await
    }

    async fn query_active(&self, before: Option<i64>) -> Result<Vec<ActiveJob>, ApiError> {
        let mut jobs = Vec::new();
        let mut start: Option<Item> = None;
        // A bound on pages (1 MB each, ~5,000 keys): a runaway index ends the read, not the run.
        for _ in 0..1_000 {
            let mut query = self
                .db
                .query()
                .table_name(&self.table)
                .index_name(ACTIVE_INDEX)
                .key_condition_expression("GSI1PK = :a")
                .expression_attribute_values(":a", s(ACTIVE_PK))
                .set_exclusive_start_key(start.take());
            if let Some(before) = before {
                // `{due_at:013}#…` sorts by due time; the bare prefix sorts before every key
                // with that due time, so `<` keeps exactly the keys due before `before`.
                query = query
                    .key_condition_expression("GSI1PK = :a AND GSI1SK < :b")
                    .expression_attribute_values(":b", s(format!("{:013}", before.max(0))));
            }
            let out = query.send().await.map_err(aws_err)?;
            jobs.extend(out.items.unwrap_or_default().iter().filter_map(|item| {
                match item.get("GSI1SK") {
                    Some(AttributeValue::S(sk)) => parse_active_sort_key(sk),
                    _ => None,
                }
            }));
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(jobs)
    }

    /// The jobs named by `(account_id, job_id)`, read consistently, 100 keys per
    /// `BatchGetItem`; missing jobs are left out. Keys the table did not process are asked for
    /// again (a bounded number of times) before giving up with an error.
    pub async fn get_jobs(&self, keys: &[(String, String)]) -> Result<Vec<Job>, ApiError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut jobs = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut pending: Vec<Item> = chunk
                .iter()
                .map(|(account_id, job_id)| {
                    Item::from([
                        ("PK".to_string(), s(account_pk(account_id))),
                        ("SK".to_string(), s(job_sk(job_id))),
                    ])
                })
                .collect();
            for attempt in 0..5u32 {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| ApiError::Internal(format!("batch get request: {e}")))?;
                let out = self
                    .db
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(aws_err)?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default()
                {
                    jobs.push(from_item(item)?);
                }
                pending = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(ApiError::Internal(format!(
                    "{} job reads left unprocessed",
                    pending.len()
                )));
            }
        }
        Ok(jobs)
    }
}

impl Store {
    /// Writes `jobs` as they are, 25 per `BatchWriteItem`: no condition, no money moves, no
    /// idempotency record. For seeding a table (the scale benchmark), never for a live job.
    pub async fn seed_jobs(&self, jobs: &[Job]) -> Result<(), ApiError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        for chunk in jobs.chunks(25) {
            let mut pending = chunk
                .iter()
                .map(|job| {
                    let put = PutRequest::builder()
                        .set_item(Some(job_item(job)?))
                        .build()
                        .map_err(|e| ApiError::Internal(format!("seed put: {e}")))?;
                    Ok(WriteRequest::builder().put_request(put).build())
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            for attempt in 0..5u32 {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                let out = self
                    .db
                    .batch_write_item()
                    .request_items(&self.table, std::mem::take(&mut pending))
                    .send()
                    .await
                    .map_err(aws_err)?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(ApiError::Internal(format!(
                    "{} job writes left unprocessed",
                    pending.len()
                )));
            }
        }
        Ok(())
    }
}

impl ActiveJob {
    /// The job as the active index lists it; `None` when it is over.
    pub fn of(job: &Job) -> Option<ActiveJob> {
        job.is_active()
            .then(|| parse_active_sort_key(&active_sort_key(job)))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn cursors_round_trip_and_refuse_tampering() {
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(cursor_decode(&cursor_encode(&id)).unwrap(), id);
        assert!(cursor_decode("not-base64!").is_err());
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v1:ACCOUNT#x");
        assert!(cursor_decode(&forged).is_err());
    }

    #[test]
    fn active_sort_keys_round_trip_every_watch() {
        let job = |parked, status| {
            let mut job: Job = serde_json::from_value(serde_json::json!({
                "job_id": "job", "account_id": "acc", "name": "n", "status": "queued",
                "instance_type": "t", "image": "i", "ssh_key_ids": [],
                "provider_ssh_key_ids": [], "auto_shutdown": true, "provider": "datacrunch",
                "price_per_hour_micros": 1, "created_at": 1, "attempts": 0,
                "tried_locations": [], "retired_instances": [], "provider_errors": 0,
                "hold_micros": 0, "charged_micros": 0, "next_check_at": 1_700_000_000_000i64,
                "version": 1,
            }))
            .unwrap();
            job.parked = parked;
            job.status = status;
            job
        };
        for (parked, status, watch) in [
            (false, JobStatus::Running, Watch::Queue),
            (true, JobStatus::Running, Watch::Running),
            (true, JobStatus::Provisioning, Watch::Booting),
            (true, JobStatus::Queued, Watch::Timer),
        ] {
            let parsed = parse_active_sort_key(&active_sort_key(&job(parked, status))).unwrap();
            assert_eq!(
                (
                    parsed.due_at,
                    parsed.account_id.as_str(),
                    parsed.job_id.as_str(),
                    parsed.watch
                ),
                (1_700_000_000_000, "acc", "job", watch)
            );
        }
        for bad in [
            "0001700000000000#acc#job",
            "0001700000000000#acc#job#x",
            "soon#acc#job#q",
        ] {
            assert_eq!(parse_active_sort_key(bad), None, "{bad}");
        }
    }
}
