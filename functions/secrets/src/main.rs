#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mimiry_shared::lambda::run_http::<mimiry_secrets::App>().await
}
