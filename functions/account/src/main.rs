use lambda_http::{run, service_fn, Error};
use mimiry_account::{handle, App};
use mimiry_shared::{aws::AwsClients, config::Config, logging};
use std::convert::Infallible;

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    let config = Config::from_env();
    let clients = AwsClients::from_env().await;
    let app = App::new(&clients, &config);
    let app = &app;
    run(service_fn(move |request| async move {
        Ok::<_, Infallible>(handle(app, request).await)
    }))
    .await
}
