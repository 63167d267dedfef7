//! `GET /ssh-keys` (`ssh_keys:read`), `POST /ssh-keys` and `DELETE /ssh-keys/{id}`
//! (`ssh_keys:write`). A key is registered at the provider first and stored only if that
//! worked; if storing fails, the provider's copy is deleted again.

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::Config;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::lambda::HttpFunction;
use mimiry_shared::names::DisplayName;
use mimiry_shared::provider::GpuProvider;
use mimiry_shared::routes::RouteName;
use mimiry_shared::ssh_key::SshPublicKey;
use mimiry_shared::store::idempotency::{in_progress, Idempotency};
use mimiry_shared::store::ssh_keys::{AddKeyError, SshKeyRecord, MAX_SSH_KEYS_PER_ACCOUNT};
use mimiry_shared::store::Store;
use mimiry_shared::time::now_ms;
use mimiry_shared::wiring;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

pub const FUNCTION: &str = "ssh-keys";

pub struct App {
    pub store: Store,
    pub provider: Arc<dyn GpuProvider>,
}

impl HttpFunction for App {
    fn new(clients: &AwsClients, config: &Config) -> App {
        App {
            store: wiring::store(clients, config),
            provider: wiring::provider(clients, config),
        }
    }

    async fn handle(&self, request: Request) -> Response<Body> {
        handle(self, request).await
    }
}

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    let ctx = match RequestCtx::begin(request, FUNCTION, &app.store).await {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    let result = match ctx.route() {
        RouteName::ListSshKeys => list(app, &ctx).await,
        RouteName::CreateSshKey => create(app, &ctx).await,
        RouteName::DeleteSshKey => delete(app, &ctx).await,
        _ => Err(ApiError::RouteNotFound),
    };
    ctx.finish(result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSshKey {
    name: String,
    public_key: String,
}

async fn list(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let limit = ctx.page_limit()?;
    let cursor = ctx.query("cursor");
    let page = app
        .store
        .list_ssh_keys(&ctx.caller().account_id, limit, cursor.as_deref())
        .await?;
    Ok(Reply::ok(json!({
        "ssh_keys": page.keys.iter().map(SshKeyRecord::view).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

async fn create(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let input: NewSshKey = ctx.json()?;
    let name = DisplayName::parse("name", &input.name)?;
    let public_key = SshPublicKey::parse(&input.public_key)?;
    let idempotency = Idempotency::of(ctx, "POST /ssh-keys")?;
    if let Some(reply) = idempotency.earlier_answer(&app.store).await? {
        return Ok(reply);
    }
    let result = add_key(
        app,
        &ctx.caller().account_id,
        name,
        &public_key,
        &idempotency,
    )
    .await;
    idempotency.settle(&app.store, result).await
}

/// Registers the key at the provider, then stores it (with the idempotency record); if storing
/// fails, the provider's copy is taken back.
async fn add_key(
    app: &App,
    account_id: &str,
    name: DisplayName,
    public_key: &SshPublicKey,
    idempotency: &Idempotency,
) -> Result<Reply, ApiError> {
    let duplicate = || ApiError::Conflict {
        code: "ssh_key_exists",
        message: format!(
            "This SSH key is already in your account (fingerprint {})",
            public_key.fingerprint()
        ),
    };
    // Cheap refusals before anything is registered at the provider; the transaction below
    // enforces both again against racing requests.
    if app
        .store
        .ssh_key_with_fingerprint(account_id, &public_key.fingerprint())
        .await?
    {
        return Err(duplicate());
    }
    if app.store.ssh_key_count(account_id).await? >= MAX_SSH_KEYS_PER_ACCOUNT {
        return Err(limit_reached());
    }

    let ssh_key_id = uuid::Uuid::new_v4().to_string();
    // Our id in the provider-side name lets us find the key if the provider's answer is lost.
    let provider_name = format!("{} (mimiry-{ssh_key_id})", name.as_str());
    let provider_key_id = match app
        .provider
        .create_ssh_key(&provider_name, &public_key.canonical())
        .await
    {
        Ok(id) => id,
        Err(e) => {
            if e.is_transient() {
                // Timeout or 5xx: it may exist at the provider all the same. Nothing half-done.
                remove_lost_provider_key(app, &provider_name).await;
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
        provider: app.provider.id().to_string(),
        provider_key_id,
        created_at: now_ms(),
    };
    let reply = Reply::with_status(StatusCode::CREATED, record.view());
    let idem_record = idempotency.record(&reply);
    let stored = app
        .store
        .add_ssh_key(&record, idem_record.as_ref(), MAX_SSH_KEYS_PER_ACCOUNT)
        .await;
    if let Err(e) = stored {
        // Nothing half-written: take the provider's copy back.
        if let Err(undo) = app.provider.delete_ssh_key(&record.provider_key_id).await {
            tracing::error!(provider_key_id = %record.provider_key_id, error = %undo, "could not remove an SSH key registered at the provider for a failed request");
        }
        return Err(match e {
            AddKeyError::Duplicate => duplicate(),
            AddKeyError::LimitReached => limit_reached(),
            AddKeyError::IdempotencyKeyTaken => in_progress(),
            AddKeyError::Other(e) => e,
        });
    }
    Ok(reply)
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
async fn remove_lost_provider_key(app: &App, provider_name: &str) {
    match app.provider.list_ssh_keys().await {
        Ok(keys) => {
            for key in keys.into_iter().filter(|k| k.name == provider_name) {
                if let Err(e) = app.provider.delete_ssh_key(&key.id).await {
                    tracing::error!(provider_key_id = %key.id, error = %e, "could not remove an SSH key left at the provider by a failed request");
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not look for an SSH key left at the provider by a failed request")
        }
    }
}

async fn delete(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let account_id = &ctx.caller().account_id;
    let id = ctx.path_param("id");
    let not_found = || ApiError::SshKeyNotFound {
        id: id.to_string(),
        as_resource: true,
    };
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(not_found());
    }
    let key = app
        .store
        .get_ssh_key(account_id, id)
        .await?
        .ok_or_else(not_found)?;
    // Provider first: if it fails, the key stays listed and the user can retry.
    app.provider.delete_ssh_key(&key.provider_key_id).await?;
    app.store.delete_ssh_key(&key).await?;
    Ok(Reply::ok(json!({ "id": key.ssh_key_id, "deleted": true })))
}
