//! The API client: the base URL, the key, one error type, and retries that are safe because
//! every call the CLI makes is idempotent (reads, cancels, and writes with an `Idempotency-Key`).

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with an error body.
    #[error("{message} ({status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("could not reach {url}: {source}")]
    Network {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// Attempts of one call when the network fails or the API is briefly unavailable.
const ATTEMPTS: u32 = 4;
/// Longer than the longest long poll (`?wait=20`) plus API Gateway's own margin.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

impl Api {
    pub fn new(base: &str, key: String) -> Api {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("mimiry-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with a timeout and a user agent builds");
        Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None, None).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::DELETE, path, None, None).await
    }

    /// A POST with an `Idempotency-Key`, so a retry never creates a second thing.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let key = uuid::Uuid::new_v4().to_string();
        self.call(Method::POST, path, Some(body), Some(&key)).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.key);
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            let retry = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if status.is_success() {
                        return Ok(body);
                    }
                    let error = CliError::Api {
                        status: status.as_u16(),
                        code: body["code"].as_str().unwrap_or("unknown").to_string(),
                        message: body["error"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("HTTP {status}: {text}")),
                    };
                    let transient = status.is_server_error()
                        || status == StatusCode::TOO_MANY_REQUESTS
                        || (status == StatusCode::CONFLICT && body["code"] == "busy");
                    if !transient {
                        return Err(error);
                    }
                    error
                }
                Err(source) => CliError::Network {
                    url: url.clone(),
                    source,
                },
            };
            if attempt >= ATTEMPTS {
                return Err(retry);
            }
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
    }
}
