//! Every function's `App`, built once, and the dispatch from a route's function name to its
//! handler: the same code Lambda runs.

use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::config::Config;
use mimiry_shared::lambda::HttpFunction;

pub struct Functions {
    pub account: mimiry_account::App,
    pub catalog: mimiry_catalog::App,
    pub ssh_keys: mimiry_ssh_keys::App,
    pub secrets: mimiry_secrets::App,
    pub jobs: mimiry_jobs::App,
    pub billing: mimiry_billing::App,
    pub dashboard: mimiry_dashboard::App,
    pub webhooks: mimiry_webhooks::App,
    pub worker: mimiry_worker::App,
    pub reconciler: mimiry_reconciler::App,
}

impl Functions {
    pub fn new(clients: &AwsClients, config: &Config) -> Functions {
        Functions {
            account: <mimiry_account::App as HttpFunction>::new(clients, config),
            catalog: <mimiry_catalog::App as HttpFunction>::new(clients, config),
            ssh_keys: <mimiry_ssh_keys::App as HttpFunction>::new(clients, config),
            secrets: <mimiry_secrets::App as HttpFunction>::new(clients, config),
            jobs: <mimiry_jobs::App as HttpFunction>::new(clients, config),
            billing: <mimiry_billing::App as HttpFunction>::new(clients, config),
            dashboard: <mimiry_dashboard::App as HttpFunction>::new(clients, config),
            webhooks: <mimiry_webhooks::App as HttpFunction>::new(clients, config),
            worker: mimiry_worker::App::new(clients, config),
            reconciler: mimiry_reconciler::App::new(clients, config),
        }
    }

    /// Calls the handler of `function` (a route group of the shared route table).
    pub async fn call(&self, function: &str, request: Request) -> Option<Response<Body>> {
        Some(match function {
            mimiry_account::FUNCTION => mimiry_account::handle(&self.account, request).await,
            mimiry_catalog::FUNCTION => mimiry_catalog::handle(&self.catalog, request).await,
            mimiry_ssh_keys::FUNCTION => mimiry_ssh_keys::handle(&self.ssh_keys, request).await,
            mimiry_secrets::FUNCTION => mimiry_secrets::handle(&self.secrets, request).await,
            mimiry_jobs::FUNCTION => mimiry_jobs::handle(&self.jobs, request).await,
            mimiry_billing::FUNCTION => mimiry_billing::handle(&self.billing, request).await,
            mimiry_dashboard::FUNCTION => mimiry_dashboard::handle(&self.dashboard, request).await,
            mimiry_webhooks::FUNCTION => mimiry_webhooks::handle(&self.webhooks, request).await,
            _ => return None,
        })
    }
}
