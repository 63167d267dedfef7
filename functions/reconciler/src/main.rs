use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use mimiry_reconciler::{reconcile, App, Summary};
use mimiry_shared::{aws::AwsClients, config::Config, logging};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    let config = Config::from_env();
    let clients = AwsClients::from_env().await;
    let app = App::new(&clients, &config);
    let app = &app;
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<EventBridgeEvent>| async move {
            Ok::<Summary, Error>(reconcile(app).await)
        },
    ))
    .await
}
