//! (being written)
use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::Config;

pub struct App {}

impl App {
    pub fn new(_clients: &AwsClients, _config: &Config) -> App {
        App {}
    }
}

pub async fn reconcile(_app: &App) {}
