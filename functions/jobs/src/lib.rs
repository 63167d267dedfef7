//! (being written)
use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::Config;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::RequestCtx;
use mimiry_shared::store::Store;

pub const FUNCTION: &str = "jobs";

pub struct App {
    pub store: Store,
}

impl App {
    pub fn new(clients: &AwsClients, config: &Config) -> App {
        App { store: Store::new(clients.dynamodb.clone(), config.table_name.clone()) }
    }
}

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    let ctx = match RequestCtx::begin(request, FUNCTION, &app.store).await {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    ctx.finish(Err(ApiError::Internal("not yet built".into())))
}
