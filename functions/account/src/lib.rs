//! `GET /account`: who am I, and how much can I spend. Any valid key may call it.

use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::Config;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::lambda::HttpFunction;
use mimiry_shared::money::Micros;
use mimiry_shared::routes::RouteName;
use mimiry_shared::store::Store;
use mimiry_shared::time::now_ms;
use serde_json::json;

pub const FUNCTION: &str = "account";

/// What the function keeps between invocations: built once in `main`.
pub struct App {
    pub store: Store,
}

impl HttpFunction for App {
    fn new(clients: &AwsClients, config: &Config) -> App {
        App {
            store: Store::new(clients.dynamodb.clone(), config.table_name.clone()),
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
        RouteName::GetAccount => get_account(app, &ctx).await,
        _ => Err(ApiError::RouteNotFound),
    };
    ctx.finish(result)
}

async fn get_account(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let caller = ctx.caller();
    // A key whose account is gone is as good as no key.
    let (account, spent) = app
        .store
        .account_and_spend(&caller.account_id, now_ms())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    Ok(Reply::ok(json!({
        "account_id": account.account_id,
        "name": account.name,
        "balance": Micros(account.balance_micros).to_string(),
        "held_credits": Micros(account.held_micros).to_string(),
        "currency": "USD",
        // Set in the dashboard (Budgets); read-only here.
        "monthly_spend_limit": account.monthly_spend_limit_micros.map(|l| Micros(l).to_string()),
        "spent_this_month": spent.to_string(),
        "key": {
            "id": caller.key_id,
            "name": caller.key_name,
            "prefix": caller.key_prefix,
            "scopes": caller.scopes,
        },
    })))
}
