//! A job's environment on its way to the instance (issue 15): checked at submit, checked
//! again at deploy (a secret deleted in between fails the job), answered to the wrapper at
//! boot (`GET /jobs/{id}/env`, job token) and masked out of the output we store.

use super::{Job, JobStatus};
use crate::error::ApiError;
use crate::secrets::{mask, EnvName, JobEnv, Vault};
use crate::store::Store;
use base64::Engine;

/// The first of `env`'s secrets the account no longer has.
pub async fn missing_secret(
    store: &Store,
    account_id: &str,
    env: &JobEnv,
) -> Result<Option<EnvName>, ApiError> {
    for name in &env.secrets {
        if store.get_secret(account_id, name).await?.is_none() {
            return Ok(Some(name.clone()));
        }
    }
    Ok(None)
}

/// At submit: every named secret exists (a 400 naming `secrets` otherwise).
pub async fn check_secrets_exist(
    store: &Store,
    account_id: &str,
    env: &JobEnv,
) -> Result<(), ApiError> {
    match missing_secret(store, account_id, env).await? {
        None => Ok(()),
        Some(name) => Err(ApiError::validation(
            "secrets",
            format!("Unknown secret `{name}`: add it with POST /secrets first"),
        )),
    }
}

/// The message of a job failed at deploy because a secret it names was deleted.
pub fn secret_deleted_message(name: &EnvName) -> String {
    format!("Secret `{name}` was deleted before the job started")
}

/// The job's secrets, opened: `(name, value)` in the job's order. A secret deleted since is
/// `Err(name)`.
async fn open_secrets(
    store: &Store,
    vault: &Vault,
    job: &Job,
) -> Result<Result<Vec<(EnvName, String)>, EnvName>, ApiError> {
    let mut values = Vec::with_capacity(job.environment.secrets.len());
    for name in &job.environment.secrets {
        match store.get_secret(&job.account_id, name).await? {
            Some(record) => values.push((
                name.clone(),
                vault.open(&job.account_id, name, &record.sealed).await?,
            )),
            None => return Ok(Err(name.clone())),
        }
    }
    Ok(Ok(values))
}

/// What `GET /jobs/{id}/env` answers the wrapper: one `NAME BASE64VALUE` line per variable
/// (names are `[A-Za-z_][A-Za-z0-9_]*` and base64 has no space: bash's `read` splits them
/// safely). Only while the job is provisioning or running: a queued job has no instance yet
/// and a finished one needs nothing.
pub async fn env_for_instance(store: &Store, vault: &Vault, job: &Job) -> Result<String, ApiError> {
    if !matches!(job.status, JobStatus::Provisioning | JobStatus::Running) {
        return Err(ApiError::Conflict {
            code: "job_not_active",
            message: format!(
                "Job is {}: its environment is served only while it provisions or runs",
                job.status.as_str()
            ),
        });
    }
    let secrets = open_secrets(store, vault, job)
        .await?
        .map_err(|name| ApiError::Conflict {
            code: "secret_missing",
            message: secret_deleted_message(&name),
        })?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut lines = String::new();
    let plain = job.environment.env.iter().map(|(n, v)| (n, v.as_str()));
    let sealed = secrets.iter().map(|(n, v)| (n, v.as_str()));
    for (name, value) in plain.chain(sealed) {
        lines.push_str(&format!("{name} {}\n", b64.encode(value)));
    }
    Ok(lines)
}

/// `text` with the job's secret values masked (a job without secrets: `text` as it is, with
/// no read). A secret deleted since cannot be masked, and needs not be: the instance never
/// got it unless it was there at boot, in which case this job's output was masked while
/// the secret existed.
pub async fn masked(
    store: &Store,
    vault: &Vault,
    job: &Job,
    text: &str,
) -> Result<String, ApiError> {
    if job.environment.secrets.is_empty() {
        return Ok(text.to_string());
    }
    let mut values = Vec::new();
    for name in &job.environment.secrets {
        if let Some(record) = store.get_secret(&job.account_id, name).await? {
            values.push(vault.open(&job.account_id, name, &record.sealed).await?);
        }
    }
    Ok(mask(text, &values))
}
