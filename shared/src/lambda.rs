//! The `main` of every HTTP function: logging, configuration and clients built once, then the
//! Lambda runtime loop calling the function's handler.

use crate::aws::AwsClients;
use crate::config::Config;
use crate::logging;
use lambda_http::{service_fn, Body, Request, Response};
use std::convert::Infallible;
use std::future::Future;

/// A route group's function: built once per container, then called per request.
pub trait HttpFunction: Sized + Send + Sync {
    fn new(clients: &AwsClients, config: &Config) -> Self;
    fn handle(&self, request: Request) -> impl Future<Output = Response<Body>> + Send;
}

pub async fn run_http<F: HttpFunction>() -> Result<(), lambda_http::Error> {
    logging::init();
    let config = Config::from_env();
    let clients = AwsClients::from_env().await;
    let function = F::new(&clients, &config);
    let function = &function;
    lambda_http::run(service_fn(move |request| async move {
        Ok::<_, Infallible>(function.handle(request).await)
    }))
    .await
}
