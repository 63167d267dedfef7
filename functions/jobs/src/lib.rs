//! Batch jobs: `POST /jobs`, `GET /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}` (API key with
//! `jobs:read` / `jobs:write`), `GET /jobs/{id}/logs` (`jobs:read`), and `POST /jobs/{id}/report`
//! `POST /jobs/{id}/logs` and `GET /jobs/{id}/env` (the instance, with its job token).

mod cancel;
mod env;
mod logs;
mod report;
mod submit;
mod view;

use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::catalog::Catalog;
use mimiry_shared::config::{Config, Timers};
use mimiry_shared::error::ApiError;
use mimiry_shared::http::RequestCtx;
use mimiry_shared::jobs::report_token::{self, SigningKey};
use mimiry_shared::lambda::HttpFunction;
use mimiry_shared::notices::Notices;
use mimiry_shared::queue::JobQueue;
use mimiry_shared::routes::RouteName;
use mimiry_shared::store::Store;
use mimiry_shared::wiring;

pub const FUNCTION: &str = "jobs";

pub struct App {
    pub store: Store,
    /// One per enabled provider, in order of preference.
    pub catalogs: Vec<Catalog>,
    pub queue: JobQueue,
    /// Signed webhooks: told when a queued job is cancelled at once.
    pub webhooks: mimiry_shared::webhooks::WebhookQueue,
    pub signing_key: SigningKey,
    pub timers: Timers,
    /// The low-balance notice, checked after a submit's hold.
    pub notices: Notices,
    /// Opens account secrets: for the wrapper's env fetch and for masking stored output.
    pub vault: mimiry_shared::secrets::Vault,
}

impl HttpFunction for App {
    fn new(clients: &AwsClients, config: &Config) -> App {
        App {
            store: wiring::store(clients, config),
            catalogs: wiring::catalogs(&wiring::providers(clients, config), config),
            queue: JobQueue::new(clients.sqs.clone(), config.jobs_queue_url.clone()),
            webhooks: wiring::webhook_queue(clients, config),
            signing_key: SigningKey::new(clients.secrets.clone(), config.report_secret_id.clone()),
            timers: config.timers,
            notices: wiring::notices(clients, config),
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
        RouteName::SubmitJob => submit::submit(app, &ctx).await,
        RouteName::ListJobs => view::list(app, &ctx).await,
        RouteName::GetJob => view::get(app, &ctx).await,
        RouteName::CancelJob => cancel::cancel(app, &ctx).await,
        RouteName::ReportJob => report::report(app, &ctx).await,
        RouteName::ShipJobLogs => logs::ship(app, &ctx).await,
        RouteName::GetJobLogs => logs::read(app, &ctx).await,
        RouteName::GetJobEnv => env::env(app, &ctx).await,
        _ => Err(ApiError::RouteNotFound),
    };
    ctx.finish(result)
}

/// A job id from the path; anything that is not a UUID cannot be a job.
fn job_id(ctx: &RequestCtx) -> Result<String, ApiError> {
    let id = ctx.path_param("id");
    uuid::Uuid::parse_str(id).map_err(|_| ApiError::NotFound("Job"))?;
    Ok(id.to_string())
}

/// The `(account id, job id)` the request's job token is valid for: the instance's routes take
/// the per-job token instead of an API key. The token first, like every route checks its caller
/// first: a token only verifies for a real job id, so a malformed id is a 401, not a 404.
async fn job_token_caller(app: &App, ctx: &RequestCtx) -> Result<(String, String), ApiError> {
    let token = ctx
        .header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .ok_or(ApiError::Unauthorized)?;
    let key = app.signing_key.get().await?;
    let account_id = report_token::verify(key, token.trim(), ctx.path_param("id"))
        .ok_or(ApiError::Unauthorized)?;
    Ok((account_id, job_id(ctx)?))
}
