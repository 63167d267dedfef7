//! Batch jobs: `POST /jobs`, `GET /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}` (API key with
//! `jobs:read` / `jobs:write`) and `POST /jobs/{id}/report` (the instance, with its job token).

mod cancel;
mod report;
mod submit;
mod view;

use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::catalog::Catalog;
use mimiry_shared::config::{Config, Timers};
use mimiry_shared::error::ApiError;
use mimiry_shared::http::RequestCtx;
use mimiry_shared::jobs::report_token::SigningKey;
use mimiry_shared::lambda::HttpFunction;
use mimiry_shared::notices::Notices;
use mimiry_shared::queue::JobQueue;
use mimiry_shared::routes::RouteName;
use mimiry_shared::store::Store;
use mimiry_shared::wiring;

pub const FUNCTION: &str = "jobs";

pub struct App {
    pub store: Store,
    pub catalog: Catalog,
    pub queue: JobQueue,
    pub signing_key: SigningKey,
    pub timers: Timers,
    /// The low-balance notice, checked after a submit's hold.
    pub notices: Notices,
}

impl HttpFunction for App {
    fn new(clients: &AwsClients, config: &Config) -> App {
        App {
            store: wiring::store(clients, config),
            catalog: wiring::catalog(wiring::provider(clients, config), config),
            queue: JobQueue::new(clients.sqs.clone(), config.jobs_queue_url.clone()),
            signing_key: SigningKey::new(clients.secrets.clone(), config.report_secret_id.clone()),
            timers: config.timers,
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
        RouteName::SubmitJob => submit::submit(app, &ctx).await,
        RouteName::ListJobs => view::list(app, &ctx).await,
        RouteName::GetJob => view::get(app, &ctx).await,
        RouteName::CancelJob => cancel::cancel(app, &ctx).await,
        RouteName::ReportJob => report::report(app, &ctx).await,
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
