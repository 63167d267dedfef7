//! The deliveries queue's consumer: the same `App`, fed SQS batches.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use mimiry_shared::lambda::HttpFunction;
use mimiry_shared::{aws::AwsClients, config::Config, logging};
use mimiry_webhooks::{handle_sqs, App};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    let config = Config::from_env();
    let clients = AwsClients::from_env().await;
    let app = <App as HttpFunction>::new(&clients, &config);
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, Error>(handle_sqs(app, event.payload).await)
    }))
    .await
}
