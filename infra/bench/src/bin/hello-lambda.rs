//! The floor of the init-time and memory benchmarks: the smallest useful `lambda_runtime`
//! function (it echoes its event), built with the same profile and runtime as the real ones.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
