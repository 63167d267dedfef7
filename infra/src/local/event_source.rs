//! A local SQS event-source mapping: long-polls the jobs queue, hands the worker a real
//! `SqsEvent`, deletes what succeeded and leaves the failed items on the queue, as Lambda does
//! with `ReportBatchItemFailures`. Also the reconciler's schedule.

use super::functions::Functions;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Lambda would make a failed item visible again after the queue's visibility timeout (minutes);
/// locally we retry sooner so that tests of faults run in seconds.
pub const LOCAL_RETRY_VISIBILITY_SECS: i32 = 2;

static MESSAGES: AtomicU64 = AtomicU64::new(0);
static DUPLICATES: AtomicU64 = AtomicU64::new(0);
static RECONCILER: std::sync::Mutex<ReconcilerTotals> = std::sync::Mutex::new(ReconcilerTotals {
    runs: 0,
    woken: 0,
    instance_alerts: 0,
    redriven: 0,
});

/// What the local reconciler timer's runs did since start (see `mimiry_reconciler::Summary`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ReconcilerTotals {
    pub runs: usize,
    pub woken: usize,
    pub instance_alerts: usize,
    pub redriven: usize,
}

pub fn reconciler_totals() -> ReconcilerTotals {
    *RECONCILER.lock().unwrap_or_else(|p| p.into_inner())
}

/// (messages handed to the worker, of which delivered twice) since start.
pub fn delivery_counts() -> (u64, u64) {
    (
        MESSAGES.load(Ordering::Relaxed),
        DUPLICATES.load(Ordering::Relaxed),
    )
}

/// `LOCAL_DUPLICATE_DELIVERIES=1` (chaos test): every message is handed to the worker twice.
fn duplicate_deliveries() -> bool {
    std::env::var("LOCAL_DUPLICATE_DELIVERIES").is_ok_and(|v| v == "1")
}

pub async fn run_worker(
    functions: Arc<Functions>,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
) {
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "receive from the jobs queue failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        // The event types are non-exhaustive: build them as Lambda would deliver them, field
        // by field on a default value.
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id.clone();
                record.receipt_handle = m.receipt_handle.clone();
                record.body = m.body.clone();
                record.md5_of_body = m.md5_of_body.clone();
                record.attributes = m
                    .attributes
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                    .collect();
                record.event_source = Some("aws:sqs".into());
                record.event_source_arn = Some(queue_arn.clone());
                record
            })
            .collect();
        // At-least-once delivery, exaggerated on request: the same batch handled twice at once.
        MESSAGES.fetch_add(messages.len() as u64, Ordering::Relaxed);
        let response = if duplicate_deliveries() {
            DUPLICATES.fetch_add(messages.len() as u64, Ordering::Relaxed);
            let (first, second) = tokio::join!(
                mimiry_worker::handle(&functions.worker, event.clone()),
                mimiry_worker::handle(&functions.worker, event)
            );
            let mut merged = first;
            for f in second.batch_item_failures {
                if !merged
                    .batch_item_failures
                    .iter()
                    .any(|m| m.item_identifier == f.item_identifier)
                {
                    merged.batch_item_failures.push(f);
                }
            }
            merged
        } else {
            mimiry_worker::handle(&functions.worker, event).await
        };
        let failed: HashSet<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        let mut deletes = Vec::new();
        for m in &messages {
            let (Some(id), Some(handle)) = (&m.message_id, &m.receipt_handle) else {
                continue;
            };
            if failed.contains(id) {
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .visibility_timeout(LOCAL_RETRY_VISIBILITY_SECS)
                    .send()
                    .await;
            } else if let Ok(entry) = DeleteMessageBatchRequestEntry::builder()
                .id(id)
                .receipt_handle(handle)
                .build()
            {
                deletes.push(entry);
            }
        }
        if !deletes.is_empty() {
            if let Err(e) = sqs
                .delete_message_batch()
                .queue_url(&queue_url)
                .set_entries(Some(deletes))
                .send()
                .await
            {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "deleting handled messages failed");
            }
        }
    }
}

/// EventBridge's `rate(…)` schedule, locally.
pub async fn run_reconciler(functions: Arc<Functions>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let run = mimiry_reconciler::reconcile(&functions.reconciler).await;
        let mut totals = RECONCILER.lock().unwrap_or_else(|p| p.into_inner());
        totals.runs += 1;
        totals.woken += run.woken;
        totals.instance_alerts += run.instance_alerts;
        totals.redriven += run.redriven;
    }
}

/// The webhooks sender's event-source mapping, locally: every message handed to
/// `mimiry_webhooks::handle_sqs`; what it reports failed is made visible again soon. A failed
/// *delivery* is not a failed message: the sender queues its own delayed retry.
pub async fn run_webhooks(functions: Arc<Functions>, sqs: aws_sdk_sqs::Client, queue_url: String) {
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "receive from the webhooks queue failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id.clone();
                record.body = m.body.clone();
                record.event_source = Some("aws:sqs".into());
                record
            })
            .collect();
        let response = mimiry_webhooks::handle_sqs(&functions.webhooks, event).await;
        let failed: HashSet<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        for m in &messages {
            let (Some(id), Some(handle)) = (&m.message_id, &m.receipt_handle) else {
                continue;
            };
            if failed.contains(id) {
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .visibility_timeout(LOCAL_RETRY_VISIBILITY_SECS)
                    .send()
                    .await;
            } else {
                let _ = sqs
                    .delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await;
            }
        }
    }
}
