//! AWS clients, built once per process in `main` and shared by every invocation.

use aws_config::BehaviorVersion;

#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl AwsClients {
    /// Loads the standard credential/region chain; `AWS_ENDPOINT_URL` (moto locally) is honoured
    /// by the SDK itself.
    pub async fn from_env() -> AwsClients {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
        }
    }
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
