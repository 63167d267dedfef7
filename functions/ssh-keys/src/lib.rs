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
use mimiry_shared::provider::GpuProvider;
use mimiry_shared::routes::RouteName;
use mimiry_shared::ssh_key::SshPublicKey;
use mimiry_shared::store::idempotency::{
    request_hash, IdempotencyKey, HEADER as IDEMPOTENCY_HEADER,
};
use mimiry_shared::store::ssh_keys::{AddKeyError, SshKeyRecord};
use mimiry_shared::store::Store;
use mimiry_shared::time::now_ms;
use mimiry_shared::wiring;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

pub const FUNCTION: &str = "ssh-keys";
const MAX_NAME_CHARS: usize = 64;

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

/// A key name: 1–64 characters, no control characters.
struct KeyName(String);

impl KeyName {
    fn parse(s: &str) -> Result<KeyName, ApiError> {
        let name = s.trim();
        if name.is_empty() {
            return Err(ApiError::validation("name", "name must not be empty"));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ApiError::validation(
                "name",
                format!("name must be at most {MAX_NAME_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(ApiError::validation(
                "name",
                "name must not contain control characters",
            ));
        }
        Ok(KeyName(name.to_string()))
    }
}

async fn list(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let keys = app.store.list_ssh_keys(&ctx.caller().account_id).await?;
    Ok(Reply::ok(json!({
        "ssh_keys": keys.iter().map(SshKeyRecord::view).collect::<Vec<_>>(),
        "next_cursor": null,
    })))
}

async fn create(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let account_id = ctx.caller().account_id.clone();
    let input: NewSshKey = ctx.json()?;
    let name = KeyName::parse(&input.name)?;
    let public_key = SshPublicKey::parse(&input.public_key)?;
    let idempotency = IdempotencyKey::parse(ctx.header(IDEMPOTENCY_HEADER))?;
    let hash = request_hash("POST /ssh-keys", ctx.body_bytes()?);
    if let Some(key) = &idempotency {
        if let Some(record) = app.store.get_idempotency(&account_id, key).await? {
            return record.replay(&hash);
        }
    }
    let duplicate = || ApiError::Conflict {
        code: "ssh_key_exists",
        message: format!(
            "This SSH key is already in your account (fingerprint {})",
            public_key.fingerprint()
        ),
    };
    if app
        .store
        .ssh_key_with_fingerprint(&account_id, &public_key.fingerprint())
        .await?
    {
        return Err(duplicate());
    }

    let ssh_key_id = uuid::Uuid::new_v4().to_string();
    // Our id in the provider-side name lets us find the key if the provider's answer is lost.
    let provider_name = format!("{} (mimiry-{ssh_key_id})", name.0);
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
        account_id: account_id.clone(),
        name: name.0,
        public_key: public_key.canonical(),
        fingerprint: public_key.fingerprint(),
        algorithm: public_key.algorithm().to_string(),
        bits: public_key.bits(),
        provider: app.provider.id().to_string(),
        provider_key_id,
        created_at: now_ms(),
    };
    let reply = Reply::with_status(StatusCode::CREATED, record.view());
    let idem_record = idempotency.as_ref().map(|k| k.record(&hash, &reply));
    match app.store.add_ssh_key(&record, idem_record.as_ref()).await {
        Ok(()) => Ok(reply),
        Err(e) => {
            // Nothing half-written: take the provider's copy back.
            if let Err(undo) = app.provider.delete_ssh_key(&record.provider_key_id).await {
                tracing::error!(provider_key_id = %record.provider_key_id, error = %undo, "could not remove an SSH key registered at the provider for a failed request");
            }
            match e {
                AddKeyError::Duplicate => {
                    // A concurrent twin with the same Idempotency-Key may have won: replay it.
                    if let Some(key) = &idempotency {
                        if let Some(stored) = app.store.get_idempotency(&account_id, key).await? {
                            return stored.replay(&hash);
                        }
                    }
                    Err(duplicate())
                }
                AddKeyError::IdempotencyKeyTaken => {
                    let key = idempotency.expect("only with a key");
                    match app.store.get_idempotency(&account_id, &key).await? {
                        Some(stored) => stored.replay(&hash),
                        None => Err(ApiError::internal("idempotency record vanished")),
                    }
                }
                AddKeyError::Other(e) => Err(e),
            }
        }
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
