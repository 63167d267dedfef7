//! `GET /secrets` (`secrets:read`), `POST /secrets` and `DELETE /secrets/{name}`
//! (`secrets:write`): an account's secrets, which jobs name in `secrets` to get them as
//! environment variables. Values are write-only: sealed by the vault (KMS envelope
//! encryption) before they are stored, never answered, never logged.

use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::Config;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::lambda::HttpFunction;
use mimiry_shared::routes::RouteName;
use mimiry_shared::secrets::{self, EnvName, SecretValue, Vault};
use mimiry_shared::store::secrets::SecretRecord;
use mimiry_shared::store::Store;
use mimiry_shared::wiring;
use serde::Deserialize;
use serde_json::json;

pub const FUNCTION: &str = "secrets";

pub struct App {
    pub store: Store,
    pub vault: Vault,
}

impl HttpFunction for App {
    fn new(clients: &AwsClients, config: &Config) -> App {
        App {
            store: wiring::store(clients, config),
            vault: wiring::vault(clients, config),
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
        RouteName::ListSecrets => list(app, &ctx).await,
        RouteName::PutSecret => put(app, &ctx).await,
        RouteName::DeleteSecret => delete(app, &ctx).await,
        _ => Err(ApiError::RouteNotFound),
    };
    ctx.finish(result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSecret {
    name: String,
    value: String,
}

async fn list(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let secrets = app.store.list_secrets(&ctx.caller().account_id).await?;
    Ok(Reply::ok(json!({
        "secrets": secrets.iter().map(SecretRecord::view).collect::<Vec<_>>(),
    })))
}

/// Creates a secret, or replaces the value of the one of that name (201 / 200). The same
/// request again stores the same value again: no idempotency record (it would keep the
/// request, and with it the value).
async fn put(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let input: NewSecret = ctx.json()?;
    let name = EnvName::parse("name", input.name.trim())?;
    let value = SecretValue::parse(input.value)?;
    let (record, created) = secrets::put(
        &app.store,
        &app.vault,
        &ctx.caller().account_id,
        name,
        &value,
    )
    .await?;
    Ok(if created {
        Reply::created(record.view())
    } else {
        Reply::ok(record.view())
    })
}

async fn delete(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let name =
        secrets::delete(&app.store, &ctx.caller().account_id, ctx.path_param("name")).await?;
    Ok(Reply::ok(json!({ "name": name, "deleted": true })))
}
