//! What adding and deleting an SSH key means, for every front door (the `ssh-keys` API function
//! and the dashboard): a key is registered at the provider first and stored only if that
//! worked; if storing fails, the provider's copy is deleted again.

use crate::error::ApiError;
use crate::names::DisplayName;
use crate::provider::{GpuProvider, ProviderError, ProviderRegistry};
use crate::ssh_key::SshPublicKey;
use crate::store::idempotency::{in_progress, IdempotencyRecord};
use crate::store::ssh_keys::{
    provider_key_name, AddKeyError, SshKeyRecord, MAX_SSH_KEYS_PER_ACCOUNT,
};
use crate::store::Store;
use crate::time::now_ms;

/// Registers the key at the provider, then stores it (with `idempotency(record)`, the API's
/// idempotency record, in the same transaction); if storing fails, the provider's copy is
/// taken back.
pub async fn add(
    store: &Store,
    provider: &dyn GpuProvider,
    account_id: &str,
    name: DisplayName,
    public_key: &SshPublicKey,
    idempotency: impl FnOnce(&SshKeyRecord) -> Option<IdempotencyRecord>,
) -> Result<SshKeyRecord, ApiError> {
    let duplicate = || ApiError::Conflict {
        code: "ssh_key_exists",
        message: format!(
            "This SSH key is already in your account (fingerprint {})",
            public_key.fingerprint()
        ),
    };
    // Cheap refusals before anything is registered at the provider; the transaction below
    // enforces both again against racing requests.
    if store
        .ssh_key_with_fingerprint(account_id, &public_key.fingerprint())
        .await?
    {
        return Err(duplicate());
    }
    if store.ssh_key_count(account_id).await? >= MAX_SSH_KEYS_PER_ACCOUNT {
        return Err(limit_reached());
    }

    let ssh_key_id = uuid::Uuid::new_v4().to_string();
    // Our id in the provider-side name lets us find the key if the provider's answer is lost.
    let provider_name = provider_key_name(name.as_str(), &ssh_key_id);

    let provider_key_id = match provider
        .create_ssh_key(&provider_name, &public_key.canonical())
        .await
    {
        Ok(id) => id,
        Err(e) => {
            if e.is_transient() {
                // Timeout or 5xx: it may exist at the provider all the same. Nothing half-done.
                remove_lost_provider_key(provider, &provider_name).await;
            }
            return Err(e.into());
        }
    };
    let record = SshKeyRecord {
        ssh_key_id,
        account_id: account_id.to_string(),
        name: name.into_string(),
        public_key: public_key.canonical(),
        fingerprint: public_key.fingerprint(),
        algorithm: public_key.algorithm().to_string(),
        bits: public_key.bits(),
        provider: provider.id().to_string(),
        provider_key_id,
        provider_ids: Default::default(),
        created_at: now_ms(),
    };
    let idem_record = idempotency(&record);
    let stored = store
        .add_ssh_key(&record, idem_record.as_ref(), MAX_SSH_KEYS_PER_ACCOUNT)
        .await;
    if let Err(e) = stored {
        // Nothing half-written: take the provider's copy back.
        if let Err(undo) = provider.delete_ssh_key(&record.provider_key_id).await {
            tracing::error!(provider_key_id = %record.provider_key_id, error = %undo, "could not remove an SSH key registered at the provider for a failed request");
        }
        return Err(match e {
            AddKeyError::Duplicate => duplicate(),
            AddKeyError::LimitReached => limit_reached(),
            AddKeyError::IdempotencyKeyTaken => in_progress(),
            AddKeyError::Other(e) => e,
        });
    }
    Ok(record)
}

fn limit_reached() -> ApiError {
    ApiError::Conflict {
        code: "ssh_key_limit_reached",
        message: format!(
            "An account can hold at most {MAX_SSH_KEYS_PER_ACCOUNT} SSH keys; delete one you no longer use first"
        ),
    }
}

/// Best effort: deletes the key created under `provider_name` whose creation answer was lost.
async fn remove_lost_provider_key(provider: &dyn GpuProvider, provider_name: &str) {
    match provider.list_ssh_keys().await {
        Ok(keys) => {
            for key in keys.into_iter().filter(|k| k.name == provider_name) {
                if let Err(e) = provider.delete_ssh_key(&key.id).await {
                    tracing::error!(provider_key_id = %key.id, error = %e, "could not remove an SSH key left at the provider by a failed request");
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not look for an SSH key left at the provider by a failed request")
        }
    }
}

/// Deletes one of the account's keys: at every provider holding a copy first (the ones jobs
/// registered it at, then the one it was added at), so that if one fails the key stays listed
/// and the user can retry (a copy already deleted counts as deleted). Another account's key is
/// `SSH key not found`.
pub async fn delete(
    store: &Store,
    provider: &dyn GpuProvider,
    providers: &ProviderRegistry,
    account_id: &str,
    id: &str,
) -> Result<SshKeyRecord, ApiError> {
    let not_found = || ApiError::SshKeyNotFound {
        id: id.to_string(),
        as_resource: true,
    };
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(not_found());
    }
    let key = store
        .get_ssh_key(account_id, id)
        .await?
        .ok_or_else(not_found)?;
    for (provider_id, provider_key_id) in &key.provider_ids {
        match providers.get(provider_id) {
            Some(holder) => holder.delete_ssh_key(provider_key_id).await?,
            // Registered while that provider was enabled: nothing here can reach it now.
            None => tracing::warn!(provider = %provider_id, provider_key_id = %provider_key_id,
                "an SSH key's copy stays at a provider that is no longer enabled"),
        }
    }
    provider.delete_ssh_key(&key.provider_key_id).await?;
    store.delete_ssh_key(&key).await?;
    Ok(key)
}

/// The ids at `provider` of an account's keys `ssh_key_ids`, registering each key there the
/// first time a job of it goes there (lazily, by the worker at deploy). Idempotent under
/// retries and racing workers: the id is recorded on the key item by a conditional write (the
/// first one wins; a loser deletes its own copy and uses the winner's), and a key whose
/// creation failed or raced is adopted by its provider-side name (which carries our id).
/// A key deleted since the job was submitted is left out.
///
/// The outer error is Mimiry's (the store); the inner one the provider's, for the deploy.
pub async fn ids_at(
    store: &Store,
    provider: &dyn GpuProvider,
    account_id: &str,
    ssh_key_ids: &[String],
) -> Result<Result<Vec<String>, ProviderError>, ApiError> {
    let mut ids = Vec::with_capacity(ssh_key_ids.len());
    for id in ssh_key_ids {
        let Some(key) = store.get_ssh_key(account_id, id).await? else {
            continue;
        };
        if let Some(at) = key.id_at(provider.id()) {
            ids.push(at.to_string());
            continue;
        }
        let name = key.provider_name();
        let created = match provider.create_ssh_key(&name, &key.public_key).await {
            Ok(created) => created,
            // Lost answer, or a racing worker registered it first: find it by name.
            Err(e) => match provider.list_ssh_keys().await {
                Ok(keys) => match keys.into_iter().find(|k| k.name == name) {
                    Some(found) => found.id,
                    None => return Ok(Err(e)),
                },
                Err(_) => return Ok(Err(e)),
            },
        };
        match store
            .set_ssh_key_provider_id(&key, provider.id(), &created)
            .await
        {
            Ok(None) => ids.push(created),
            Ok(Some(theirs)) => {
                if theirs != created {
                    if let Err(e) = provider.delete_ssh_key(&created).await {
                        tracing::warn!(provider = provider.id(), provider_key_id = %created, error = %e,
                            "could not remove a duplicate SSH key registered by a racing worker");
                    }
                }
                ids.push(theirs);
            }
            // Deleted by its owner meanwhile: take our copy back and leave it out.
            Err(ApiError::NotFound(_)) => {
                let _ = provider.delete_ssh_key(&created).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Ok(ids))
}
