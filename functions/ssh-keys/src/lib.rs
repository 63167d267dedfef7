//! `GET /ssh-keys` (`ssh_keys:read`), `POST /ssh-keys` and `DELETE /ssh-keys/{id}`
//! (`ssh_keys:write`). What adding and deleting mean lives in `mimiry_shared::ssh_keys`, which
//! the dashboard calls too.

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::Config;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::lambda::HttpFunction;
use mimiry_shared::names::DisplayName;
use mimiry_shared::provider::{GpuProvider, ProviderRegistry};
use mimiry_shared::routes::RouteName;
use mimiry_shared::ssh_key::SshPublicKey;
use mimiry_shared::ssh_keys;
use mimiry_shared::store::idempotency::Idempotency;
use mimiry_shared::store::ssh_keys::SshKeyRecord;
use mimiry_shared::store::Store;
use mimiry_shared::wiring;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

pub const FUNCTION: &str = "ssh-keys";

pub struct App {
    pub store: Store,
    pub provider: Arc<dyn GpuProvider>,
    /// Every enabled provider: a key's copies registered by jobs are deleted with it.
    pub providers: ProviderRegistry,
}

impl HttpFunction for App {
    fn new(clients: &AwsClients, config: &Config) -> App {
        App {
            store: wiring::store(clients, config),
            provider: wiring::provider(clients, config),
            providers: wiring::providers(clients, config),
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
    let result = ssh_keys::add(
        &app.store,
        app.provider.as_ref(),
        &ctx.caller().account_id,
        name,
        &public_key,
        |record| idempotency.record(&created(record)),
    )
    .await
    .map(|record| created(&record));
    idempotency.settle(&app.store, result).await
}

fn created(record: &SshKeyRecord) -> Reply {
    Reply::with_status(StatusCode::CREATED, record.view())
}

async fn delete(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let key = ssh_keys::delete(
        &app.store,
        app.provider.as_ref(),
        &app.providers,
        &ctx.caller().account_id,
        ctx.path_param("id"),
    )
    .await?;
    Ok(Reply::ok(json!({ "id": key.ssh_key_id, "deleted": true })))
}
