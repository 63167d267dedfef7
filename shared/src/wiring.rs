//! Building the long-lived pieces a function needs from its configuration, once, in `main`.

use crate::aws::AwsClients;
use crate::catalog::Catalog;
use crate::config::{Config, ProviderId};
use crate::notices::Notices;
use crate::provider::{
    ApiKey, Credentials, DataCrunchClient, GpuProvider, LambdaCloudClient, ProviderRegistry,
};
use crate::store::Store;
use std::sync::Arc;

pub fn store(clients: &AwsClients, config: &Config) -> Store {
    Store::new(clients.dynamodb.clone(), config.table_name.clone())
        .with_key_cache(config.api_key_cache_ttl)
}

/// The DataCrunch client; credentials are read from Secrets Manager on first use. Where SSH
/// keys are added (`datacrunch_id`); jobs go to any enabled provider (`providers`).
pub fn provider(clients: &AwsClients, config: &Config) -> Arc<dyn GpuProvider> {
    Arc::new(DataCrunchClient::new(
        &config.provider_base_url,
        Credentials::SecretsManager {
            client: clients.secrets.clone(),
            secret_id: config.provider_secret_id.clone(),
        },
        config.provider_timeout,
    ))
}

/// Email notices, from the configured sender (none configured: nothing is sent).
pub fn notices(clients: &AwsClients, config: &Config) -> Notices {
    Notices::new(
        clients.ses.clone(),
        config.notice_from_email.clone(),
        &config.identity.dashboard_url,
    )
}

/// One client per enabled provider (`PROVIDERS`), each with its own secret.
pub fn providers(clients: &AwsClients, config: &Config) -> ProviderRegistry {
    ProviderRegistry::new(
        config
            .providers
            .iter()
            .map(|id| match id {
                ProviderId::DataCrunch => provider(clients, config),
                ProviderId::Lambda => Arc::new(LambdaCloudClient::new(
                    &config.lambda_base_url,
                    ApiKey::SecretsManager {
                        client: clients.secrets.clone(),
                        secret_id: config.lambda_secret_id.clone(),
                    },
                    config.provider_timeout,
                )) as Arc<dyn GpuProvider>,
            })
            .collect(),
    )
}

/// One catalog per enabled provider, in order of preference.
pub fn catalogs(registry: &ProviderRegistry, config: &Config) -> Vec<Catalog> {
    registry
        .all()
        .iter()
        .map(|p| catalog(p.clone(), config))
        .collect()
}

pub fn catalog(provider: Arc<dyn GpuProvider>, config: &Config) -> Catalog {
    Catalog::new(provider, config.catalog_ttl, config.price_markup)
}

/// The signed webhooks' deliveries queue (`WEBHOOKS_QUEUE_URL`; unset: webhooks are off).
pub fn webhook_queue(clients: &AwsClients, config: &Config) -> crate::webhooks::WebhookQueue {
    crate::webhooks::WebhookQueue::new(clients.sqs.clone(), &config.webhooks)
}

/// The vault of account secrets (KMS envelope encryption).
pub fn vault(clients: &AwsClients, config: &Config) -> crate::secrets::Vault {
    crate::secrets::Vault::new(clients.kms.clone(), config.secrets_key_id.clone())
}
