//! Signed webhooks (issue 13): the `/webhooks` routes (`webhooks:read` / `webhooks:write`) and,
//! in the `mimiry-webhooks-sender` binary, the deliveries queue's consumer ([`handle_sqs`]).
//!
//! Delivery, per endpoint and job: the job's events (read off the job record) are sent in
//! order; the endpoint's progress item says how far it got. A failed attempt queues a retry
//! with a doubling delay and nothing later of that job is sent before it (order per job); an
//! event failing for the retry window is given up, and an endpoint failing that long is
//! disabled and the account emailed. See docs/decisions.md, "Signed webhooks".

mod send;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures_util::future::join_all;
use http::StatusCode;
use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::Config;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::lambda::HttpFunction;
use mimiry_shared::notices::Notices;
use mimiry_shared::routes::RouteName;
use mimiry_shared::store::webhooks::Endpoint;
use mimiry_shared::store::Store;
use mimiry_shared::webhooks::{self, WebhookConfig, WebhookMessage, WebhookQueue};
use mimiry_shared::wiring;
use serde::Deserialize;
use serde_json::json;

pub const FUNCTION: &str = "webhooks";

/// Deliveries shown by `GET /webhooks/{id}`.
const RECENT_DELIVERIES: i32 = 50;

pub struct App {
    pub store: Store,
    pub queue: WebhookQueue,
    pub config: WebhookConfig,
    pub notices: Notices,
}

impl HttpFunction for App {
    fn new(clients: &AwsClients, config: &Config) -> App {
        App {
            store: wiring::store(clients, config),
            queue: wiring::webhook_queue(clients, config),
            config: config.webhooks.clone(),
            notices: wiring::notices(clients, config),
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
        RouteName::ListWebhooks => list(app, &ctx).await,
        RouteName::CreateWebhook => create(app, &ctx).await,
        RouteName::GetWebhook => get(app, &ctx).await,
        RouteName::DeleteWebhook => delete(app, &ctx).await,
        _ => Err(ApiError::RouteNotFound),
    };
    ctx.finish(result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    url: String,
    events: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

async fn list(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let all = app.store.list_webhooks(&ctx.caller().account_id).await?;
    Ok(Reply::ok(json!({
        "webhooks": all.iter().map(Endpoint::view).collect::<Vec<_>>(),
    })))
}

async fn create(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let input: NewEndpoint = ctx.json()?;
    let (endpoint, secret) = webhooks::register(
        &app.store,
        &app.config,
        &ctx.caller().account_id,
        &input.url,
        &input.events,
        input.description,
    )
    .await?;
    let mut body = endpoint.view();
    body["secret"] = json!(secret.expose());
    Ok(Reply::with_status(StatusCode::CREATED, body))
}

async fn get(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let endpoint =
        webhooks::find(&app.store, &ctx.caller().account_id, ctx.path_param("id")).await?;
    let deliveries = app
        .store
        .recent_webhook_deliveries(&endpoint.endpoint_id, RECENT_DELIVERIES)
        .await?;
    let mut body = endpoint.view();
    body["deliveries"] = deliveries.iter().map(|d| d.view()).collect();
    Ok(Reply::ok(body))
}

async fn delete(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let endpoint =
        webhooks::find(&app.store, &ctx.caller().account_id, ctx.path_param("id")).await?;
    app.store
        .delete_webhook(&endpoint.account_id, &endpoint.endpoint_id)
        .await?;
    Ok(Reply::ok(
        json!({ "id": endpoint.endpoint_id, "deleted": true }),
    ))
}

/// Handles a batch of the deliveries queue; a message that failed is reported so SQS gives it
/// back (a retry of a failed *delivery* is a new, delayed message, not this).
pub async fn handle_sqs(app: &App, event: SqsEvent) -> SqsBatchResponse {
    let results = join_all(event.records.iter().map(|record| async move {
        let id = record.message_id.clone().unwrap_or_default();
        let message: WebhookMessage = match record.body.as_deref().map(serde_json::from_str) {
            Some(Ok(m)) => m,
            _ => {
                tracing::error!(message_id = %id, "dropping an unreadable webhooks-queue message");
                return None;
            }
        };
        match send::handle(app, &message).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(error = %e, "webhook message failed; it will be retried");
                Some(id)
            }
        }
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for id in results.into_iter().flatten() {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}
