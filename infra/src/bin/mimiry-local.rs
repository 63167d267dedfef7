//! The local server: the template's routes on 127.0.0.1 from the functions' own handlers, the
//! worker behind a local SQS event-source mapping, and the reconciler on a timer.
//! Configured by the same environment variables as the Lambda functions.

use anyhow::{anyhow, Context, Result};
use aws_sdk_sqs::types::QueueAttributeName;
use clap::Parser;
use mimiry_infra::bootstrap::find_identity;
use mimiry_infra::local::{event_source, functions::Functions, server};
use mimiry_infra::template::{check_routes, Template};
use mimiry_shared::{aws::AwsClients, config::Config, logging};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "mimiry-local",
    about = "Serve Mimiry locally from the Lambda handlers"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: String,
    /// Seconds between reconciler runs (EventBridge runs it once a minute); the reconciler
    /// reads the same figure (`RECONCILE_EVERY_SECONDS`) to know how far ahead to wake jobs.
    #[arg(long, env = "RECONCILE_EVERY_SECONDS")]
    reconcile_every: Option<u64>,
    /// Do not consume the jobs queue (for tests that drive the worker themselves).
    #[arg(long)]
    no_worker: bool,
    /// Batches the worker handles at once. In AWS the event-source mapping runs up to
    /// `MaximumConcurrency` (template.yaml: 20) invocations; one local poller made a backlog
    /// of thousands of messages in a 500-job chaos run, so that a job's look came 20 min late.
    #[arg(long, env = "LOCAL_WORKER_CONCURRENCY", default_value_t = 4)]
    worker_concurrency: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    logging::init();
    let cli = Cli::parse();
    check_routes(&Template::find()?)?;
    let mut config = Config::from_env();
    if let Some(every) = cli.reconcile_every {
        config.timers.reconcile_every_secs = every.max(1) as i64;
    }
    if config.jobs_queue_url.is_empty() {
        return Err(anyhow!("JOBS_QUEUE_URL is not set"));
    }
    let clients = AwsClients::from_env().await;
    if config.webhooks.queue_url.is_empty() {
        // The local stack's deliveries queue (template.yaml's WebhooksQueue); creating a queue
        // that exists is a no-op.
        config.webhooks.queue_url = clients
            .sqs
            .create_queue()
            .queue_name("mimiry-webhooks")
            .send()
            .await
            .context("creating the webhooks queue (is moto up?)")?
            .queue_url
            .unwrap_or_default();
    }
    if config.identity.user_pool_id.is_empty() {
        // The emulator's pool ids are random: find the template's pool by name.
        if let Some(found) = find_identity(&clients, &Template::find()?).await? {
            config.identity.user_pool_id = found.user_pool_id;
            config.identity.client_id = found.client_id;
            let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
            config.identity.jwks_url = config.identity.default_jwks_url(endpoint.as_deref());
        } else {
            tracing::warn!("no Cognito user pool found: the dashboard cannot sign anyone in (run mimiry-admin bootstrap)");
        }
    }
    let functions = Arc::new(Functions::new(&clients, &config));

    if !cli.no_worker {
        let arn = clients
            .sqs
            .get_queue_attributes()
            .queue_url(&config.jobs_queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .context("reading the jobs queue (is moto up and bootstrapped?)")?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default();
        for _ in 0..cli.worker_concurrency.max(1) {
            tokio::spawn(event_source::run_worker(
                functions.clone(),
                clients.sqs.clone(),
                config.jobs_queue_url.clone(),
                arn.clone(),
            ));
        }
        tokio::spawn(event_source::run_webhooks(
            functions.clone(),
            clients.sqs.clone(),
            config.webhooks.queue_url.clone(),
        ));
        tokio::spawn(event_source::run_reconciler(
            functions.clone(),
            Duration::from_secs(config.timers.reconcile_every_secs as u64),
        ));
    }

    let listener = tokio::net::TcpListener::bind(&cli.addr)
        .await
        .with_context(|| format!("binding {}", cli.addr))?;
    let addr = listener.local_addr()?;
    println!("mimiry-local listening on http://{addr}");
    use std::io::Write;
    std::io::stdout().flush()?;
    axum::serve(listener, server::router(functions))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
