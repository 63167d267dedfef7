//! AWS clients, built once per process in `main` and shared by every invocation.

use std::time::Duration;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_types::sdk_config::SharedCredentialsProvider;

#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// Envelope encryption of account secrets (issue 15).
    pub kms: aws_sdk_kms::Client,
    /// Email notices (the low-balance notice).
    pub ses: aws_sdk_ses::Client,
    /// The loaded configuration, for a function's own clients (the dashboard's Cognito).
    pub sdk: aws_config::SdkConfig,
}

/// The roots AWS service endpoints chain to (Amazon Trust Services: Amazon Root CA 1–4 and the
/// Starfield Services G2 cross-sign), compiled in.
///
/// Why not the platform store: loading and parsing the ~140 system roots took 2.5–3.5 ms of
/// every cold start (measured by `make bench`), to trust CAs no AWS endpoint uses. Set
/// `AWS_TRUST_NATIVE_ROOTS=true` to trust the platform's roots as well (e.g. behind a
/// TLS-inspecting proxy).
const AWS_ROOT_CAS: &[u8] = include_bytes!("../certs/aws-root-cas.pem");

impl AwsClients {
    /// Clients configured from the Lambda environment (see [`lambda_sdk_config`]).
    pub async fn from_env() -> AwsClients {
        let sdk = lambda_sdk_config();
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            kms: aws_sdk_kms::Client::new(&sdk),
            ses: aws_sdk_ses::Client::new(&sdk),
            sdk,
        }
    }
}

/// The SDK configuration a Lambda function has in its environment, and nothing else: the
/// execution role's credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`), `AWS_REGION` (or `AWS_DEFAULT_REGION`) and, locally, `AWS_ENDPOINT_URL`
/// (moto). Every local runner here (`make run`, the tests, the bench, SAM local) sets the same
/// variables.
///
/// Why not `aws_config::defaults(..).load()`: its default chain (profile files, SSO, web
/// identity, ECS, IMDS, STS) is linked into every binary even when never taken, ~0.7 MB of
/// each function (docs/decisions.md, "Binary size"), and Lambda never uses it. The rest is what
/// that loader would choose with no profile: standard retries (3 attempts), a 3.1 s connect
/// timeout, a lazy identity cache.
pub fn lambda_sdk_config() -> SdkConfig {
    // The SDK's default client (hyper + rustls/aws-lc), with our trust store.
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(tls_context())
        .build_https();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ))
        .retry_config(RetryConfig::standard())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(3100))
                .build(),
        )
        .identity_cache(IdentityCache::lazy().build())
        .http_client(http_client);
    config.set_region(region.map(Region::new));
    config.set_endpoint_url(env("AWS_ENDPOINT_URL"));
    config.build()
}

/// [`AWS_ROOT_CAS`], plus the platform's roots only when asked for.
fn tls_context() -> TlsContext {
    let native = std::env::var("AWS_TRUST_NATIVE_ROOTS").is_ok_and(|v| v == "true");
    let trust = TrustStore::empty()
        .with_native_roots(native)
        .with_pem_certificate(AWS_ROOT_CAS);
    TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("a trust store without custom server names always builds")
}

/// Reads a secret's string value.
pub async fn secret_string(
    client: &aws_sdk_secretsmanager::Client,
    id: &str,
) -> Result<String, String> {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| {
            format!(
                "reading secret {id}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            )
        })?;
    out.secret_string()
        .map(str::to_string)
        .ok_or_else(|| format!("secret {id} has no string value"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    #[test]
    fn the_compiled_in_roots_are_the_five_amazon_trust_services_cas() {
        let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(AWS_ROOT_CAS)
            .collect::<Result<_, _>>()
            .expect("valid PEM");
        assert_eq!(certs.len(), 5);
        let _ = tls_context();
    }
}
