//! (being written)
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::Config;

pub struct App {}

impl App {
    pub fn new(_clients: &AwsClients, _config: &Config) -> App {
        App {}
    }
}

pub async fn handle(_app: &App, _event: SqsEvent) -> SqsBatchResponse {
    SqsBatchResponse::default()
}
