//! Sending a job's events to an endpoint, in order, with retries.

use crate::App;
use mimiry_shared::error::ApiError;
use mimiry_shared::jobs::Job;
use mimiry_shared::store::webhooks::{Delivery, Endpoint, Progress};
use mimiry_shared::time::now_ms;
use mimiry_shared::webhooks::{job_events, message_id, payload, target, EventType, WebhookMessage};
use std::time::{Duration, Instant};

/// A fresh trigger takes over a retry this overdue (its queued message was lost).
const LOST_RETRY_GRACE_MS: i64 = 120_000;

pub async fn handle(app: &App, message: &WebhookMessage) -> Result<(), ApiError> {
    match message {
        WebhookMessage::JobChanged { account_id, job_id } => {
            let endpoints: Vec<Endpoint> = app
                .store
                .list_webhooks(account_id)
                .await?
                .into_iter()
                .filter(|e| e.disabled_at.is_none())
                .collect();
            if endpoints.is_empty() {
                return Ok(());
            }
            let Some(job) = app.store.get_job(account_id, job_id).await? else {
                return Ok(());
            };
            let results = futures_util::future::join_all(
                endpoints
                    .iter()
                    .map(|e| deliver_pending(app, e, &job, None)),
            )
            .await;
            results.into_iter().collect()
        }
        WebhookMessage::Retry {
            account_id,
            endpoint_id,
            job_id,
            attempt,
            not_before,
        } => {
            let wait = not_before - now_ms();
            if wait > 1000 {
                // Longer than one SQS delay: another hop.
                return app.queue.send(message, (wait + 999) / 1000).await;
            }
            let Some(endpoint) = app.store.get_webhook(account_id, endpoint_id).await? else {
                return Ok(());
            };
            if endpoint.disabled_at.is_some() {
                return Ok(());
            }
            let Some(job) = app.store.get_job(account_id, job_id).await? else {
                return Ok(());
            };
            deliver_pending(app, &endpoint, &job, Some(*attempt)).await
        }
    }
}

/// Sends the endpoint the job's events it has not had, in order, stopping at the first that
/// fails (its retry is queued). `retry` is the attempt a retry message makes; a fresh trigger
/// (`None`) leaves a job with a retry pending to that retry, so nothing overtakes it.
async fn deliver_pending(
    app: &App,
    endpoint: &Endpoint,
    job: &Job,
    retry: Option<u32>,
) -> Result<(), ApiError> {
    let events = job_events(job);
    let mut retry = retry;
    // Bounded: one round per event at most, plus one.
    for _ in 0..=events.len() {
        let progress = app
            .store
            .webhook_progress(&endpoint.endpoint_id, &job.job_id)
            .await?;
        let now = now_ms();
        let attempt = match retry {
            Some(a) if a == progress.retry_attempt => a,
            Some(_) => return Ok(()), // a stale or duplicate retry
            None if progress.retry_attempt > 0 => {
                let overdue = progress
                    .retry_at
                    .is_some_and(|at| at + LOST_RETRY_GRACE_MS < now);
                if !overdue {
                    return Ok(());
                }
                progress.retry_attempt
            }
            None => 1,
        };
        let Some(&event) = events.iter().find(|e| e.seq() > progress.done_seq) else {
            return Ok(());
        };
        if !endpoint.events.wants(event) {
            let next = Progress {
                done_seq: event.seq(),
                ..Progress::default()
            };
            save(app, endpoint, job, &progress, &next, now).await?;
            retry = None;
            continue;
        }
        let delivery = attempt_once(app, endpoint, job, event, attempt).await;
        let ok = delivery.outcome == "delivered";
        let given_up = !ok
            && progress
                .first_failure_at
                .is_some_and(|first| now - first >= app.config.retry_window_secs * 1000);
        let mut delivery = delivery;
        if given_up {
            delivery.outcome = "given_up".into();
        }
        if let Err(e) = app
            .store
            .log_webhook_delivery(&endpoint.endpoint_id, &delivery)
            .await
        {
            tracing::warn!(endpoint_id = %endpoint.endpoint_id, error = %e, "could not log a webhook delivery");
        }
        health(app, endpoint, ok, now).await;
        if ok || given_up {
            let next = Progress {
                done_seq: event.seq(),
                ..Progress::default()
            };
            if !save(app, endpoint, job, &progress, &next, now).await? {
                return Ok(());
            }
            retry = None;
            continue;
        }
        // Failed: queue the next attempt first, then record it (if the record loses a race,
        // the queued retry is stale and dropped).
        let wait = app.config.backoff_secs(attempt);
        let retry_at = now + wait * 1000;
        app.queue
            .send(
                &WebhookMessage::Retry {
                    account_id: job.account_id.clone(),
                    endpoint_id: endpoint.endpoint_id.clone(),
                    job_id: job.job_id.clone(),
                    attempt: attempt + 1,
                    not_before: retry_at,
                },
                wait,
            )
            .await?;
        let next = Progress {
            version: 0,
            done_seq: progress.done_seq,
            retry_attempt: attempt + 1,
            retry_at: Some(retry_at),
            first_failure_at: progress.first_failure_at.or(Some(now)),
        };
        save(app, endpoint, job, &progress, &next, now).await?;
        return Ok(());
    }
    Ok(())
}

async fn save(
    app: &App,
    endpoint: &Endpoint,
    job: &Job,
    old: &Progress,
    new: &Progress,
    now: i64,
) -> Result<bool, ApiError> {
    app.store
        .save_webhook_progress(&endpoint.endpoint_id, &job.job_id, old, new, now)
        .await
}

/// One POST, signed, to the address the URL was checked at (DNS rebinding cannot turn it
/// into a request to a private address).
async fn attempt_once(
    app: &App,
    endpoint: &Endpoint,
    job: &Job,
    event: EventType,
    attempt: u32,
) -> Delivery {
    let id = message_id(&endpoint.endpoint_id, &job.job_id, event);
    let now = now_ms();
    let started = Instant::now();
    let result = post(app, endpoint, job, event, &id, now).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let (status_code, error) = match result {
        Ok(status) if (200..300).contains(&status) => (Some(status), None),
        Ok(status) => (
            Some(status),
            Some(format!("the endpoint answered HTTP {status}")),
        ),
        Err(e) => (None, Some(e)),
    };
    let outcome = if error.is_none() {
        "delivered"
    } else {
        "failed"
    };
    tracing::info!(
        endpoint_id = %endpoint.endpoint_id,
        job_id = %job.job_id,
        event = event.as_str(),
        attempt,
        status_code,
        latency_ms,
        outcome,
        "webhook delivery"
    );
    Delivery {
        message_id: id,
        event: event.as_str().to_string(),
        job_id: job.job_id.clone(),
        attempt,
        at: now,
        status_code,
        latency_ms,
        error,
        outcome: outcome.into(),
    }
}

async fn post(
    app: &App,
    endpoint: &Endpoint,
    job: &Job,
    event: EventType,
    id: &str,
    now: i64,
) -> Result<u16, String> {
    let checked = target::check(&endpoint.url, app.config.allow_loopback)
        .await
        .map_err(|e| e.to_string())?;
    let body = payload(event, job, now).to_string();
    let timestamp = now / 1000;
    let signature = endpoint.secret.sign(id, timestamp, &body);
    let client = mimiry_shared::tls::https_client()
        .resolve_to_addrs(&checked.host, &checked.addrs)
        // A redirect could lead anywhere: not followed (a 3xx is a failed attempt).
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(app.config.timeout_ms))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(checked.url)
        .header("content-type", "application/json")
        .header("user-agent", "Mimiry-Webhooks/1")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("could not deliver: {}", without_url(e)))?;
    Ok(response.status().as_u16())
}

/// reqwest's error text without the URL (kept short; the URL is on the endpoint).
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Keeps the endpoint's health: a success clears `failing_since`; a failure sets it, and an
/// endpoint failing for the retry window is disabled and its account emailed, once.
async fn health(app: &App, endpoint: &Endpoint, ok: bool, now: i64) {
    let noted = app
        .store
        .note_webhook_health(endpoint, (!ok).then_some(now))
        .await;
    if let Err(e) = noted {
        tracing::warn!(endpoint_id = %endpoint.endpoint_id, error = %e, "could not record a webhook endpoint's health");
    }
    let failing_too_long = !ok
        && endpoint
            .failing_since
            .is_some_and(|since| now - since >= app.config.retry_window_secs * 1000);
    if !failing_too_long {
        return;
    }
    match app.store.disable_webhook(endpoint, now).await {
        Ok(true) => {
            tracing::warn!(endpoint_id = %endpoint.endpoint_id, account = %endpoint.account_id, "webhook endpoint disabled after failing for the retry window");
            let base = app
                .notices
                .dashboard_url()
                .trim_end_matches('/')
                .to_string();
            let text = format!(
                "Mimiry could not deliver webhooks to {} for {} hours, so the endpoint was \
                 disabled and nothing more is sent to it.\n\n\
                 Check that it answers with a 2xx status, then register it again: \
                 {base}/dashboard/webhooks\n",
                endpoint.url,
                app.config.retry_window_secs / 3600,
            );
            if let Err(e) = app
                .notices
                .send_to_account(
                    &app.store,
                    &endpoint.account_id,
                    "A Mimiry webhook endpoint was disabled",
                    &text,
                )
                .await
            {
                tracing::warn!(endpoint_id = %endpoint.endpoint_id, error = %e, "could not email about a disabled webhook endpoint");
            }
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(endpoint_id = %endpoint.endpoint_id, error = %e, "could not disable a failing webhook endpoint")
        }
    }
}
