//! A job's log in the table: one item per chunk (`JOBLOG#{account}#{job}` / `CHUNK#{seq:010}`)
//! and one `META` item counting the bytes stored, for the cap. Every item expires
//! [`RETENTION_SECS`] after the last chunk (TTL on `expires_at`). Why DynamoDB and not S3:
//! docs/decisions.md.

use super::{aws_err, cancelled_conditions, n, s, Item, Store};
use crate::error::ApiError;
use crate::jobs::logs::{Chunk, CAP_BYTES, MARKER_SEQ, RETENTION_SECS, TRUNCATION_MARKER};
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

fn log_pk(account_id: &str, job_id: &str) -> String {
    format!("JOBLOG#{account_id}#{job_id}")
}

fn chunk_sk(seq: u64) -> String {
    format!("CHUNK#{seq:010}")
}

const META_SK: &str = "META";

/// What became of a shipped chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now, or already (a retry).
    Stored,
    /// Not stored: the log is at its cap and ends with the truncation marker.
    Truncated,
}

/// Chunks read per query page: 64 KiB each at most, so a page stays near DynamoDB's 1 MB.
const CHUNKS_PER_QUERY: i32 = 16;

impl Store {
    /// Stores chunk `seq` once, counting its bytes against the job's cap. Past the cap the
    /// chunk is dropped and the log gets its truncation marker instead.
    pub async fn put_log_chunk(
        &self,
        account_id: &str,
        job_id: &str,
        seq: u64,
        text: &str,
        now_ms: i64,
    ) -> Result<Stored, ApiError> {
        let pk = log_pk(account_id, job_id);
        let expires = now_ms / 1000 + RETENTION_SECS;
        let len = text.len() as u64;
        let chunk = Put::builder()
            .table_name(&self.table)
            .item("PK", s(&pk))
            .item("SK", s(chunk_sk(seq)))
            .item("text", s(text))
            .item("expires_at", n(expires))
            .condition_expression("attribute_not_exists(SK)")
            .build()
            .map_err(ApiError::internal)?;
        let count = Update::builder()
            .table_name(&self.table)
            .key("PK", s(&pk))
            .key("SK", s(META_SK))
            .update_expression("ADD bytes :len SET expires_at = :exp")
            .condition_expression("attribute_not_exists(bytes) OR bytes <= :room")
            .expression_attribute_values(":len", n(len))
            .expression_attribute_values(":exp", n(expires))
            .expression_attribute_values(":room", n(CAP_BYTES.saturating_sub(len)))
            .build()
            .map_err(ApiError::internal)?;
        let result = self
            .transact(vec![
                TransactWriteItem::builder().put(chunk).build(),
                TransactWriteItem::builder().update(count).build(),
            ])
            .await;
        let failed = match result {
            Ok(()) => return Ok(Stored::Stored),
            Err(e) => match cancelled_conditions(&e) {
                Some(failed) => failed,
                None => return Err(aws_err(e)),
            },
        };
        if failed.first() == Some(&true) {
            // This sequence number is stored already: the wrapper retried.
            return Ok(Stored::Stored);
        }
        // Over the cap: close the log (the count past the cap refuses every later chunk, even a
        // small one that would fit), then end it with the marker (once).
        self.db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(&pk))
            .key("SK", s(META_SK))
            .update_expression("SET bytes = :closed")
            .expression_attribute_values(":closed", n(CAP_BYTES + 1))
            .send()
            .await
            .map_err(aws_err)?;
        let marker = self
            .db
            .put_item()
            .table_name(&self.table)
            .item("PK", s(&pk))
            .item("SK", s(chunk_sk(MARKER_SEQ)))
            .item("text", s(format!("{TRUNCATION_MARKER}\n")))
            .item("expires_at", n(expires))
            .condition_expression("attribute_not_exists(SK)")
            .send()
            .await;
        match marker {
            Ok(_) => Ok(Stored::Truncated),
            Err(e) if super::is_condition_failure(&e) => Ok(Stored::Truncated),
            Err(e) => Err(aws_err(e)),
        }
    }

    /// The chunks from `from_seq` on, in order, and whether more follow them: query pages
    /// until `max_chunks` chunks or `max_bytes` of text (at least one page).
    pub async fn log_chunks_from(
        &self,
        account_id: &str,
        job_id: &str,
        from_seq: u64,
        max_chunks: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Chunk>, bool), ApiError> {
        let mut chunks = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .db
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND SK BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(log_pk(account_id, job_id)))
                .expression_attribute_values(":from", s(chunk_sk(from_seq)))
                .expression_attribute_values(":to", s(chunk_sk(MARKER_SEQ)))
                .consistent_read(true)
                .limit(CHUNKS_PER_QUERY)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(aws_err)?;
            chunks.extend(out.items.unwrap_or_default().into_iter().filter_map(chunk));
            match out.last_evaluated_key {
                Some(k)
                    if !k.is_empty()
                        && chunks.len() < max_chunks
                        && chunks.iter().map(|c| c.text.len()).sum::<usize>() < max_bytes =>
                {
                    start = Some(k)
                }
                Some(k) if !k.is_empty() => return Ok((chunks, true)),
                _ => return Ok((chunks, false)),
            }
        }
    }

    /// The log's last chunks, in order, until they hold `lines` lines (or the log's start).
    pub async fn log_chunks_tail(
        &self,
        account_id: &str,
        job_id: &str,
        lines: usize,
    ) -> Result<Vec<Chunk>, ApiError> {
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut counted = 0;
        let mut start: Option<Item> = None;
        // Bounded: the cap limits a log to CAP_BYTES / 1 byte-per-line lines at worst, and a
        // page of lines is at most MAX_LINES.
        loop {
            let out = self
                .db
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :chunk)")
                .expression_attribute_values(":pk", s(log_pk(account_id, job_id)))
                .expression_attribute_values(":chunk", s("CHUNK#"))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(CHUNKS_PER_QUERY)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(aws_err)?;
            for c in out.items.unwrap_or_default().into_iter().filter_map(chunk) {
                counted += c.lines().count();
                chunks.push(c);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() && counted < lines => start = Some(k),
                _ => break,
            }
        }
        chunks.reverse();
        Ok(chunks)
    }
}

fn chunk(item: Item) -> Option<Chunk> {
    let seq = item
        .get("SK")?
        .as_s()
        .ok()?
        .strip_prefix("CHUNK#")?
        .parse()
        .ok()?;
    let text = item.get("text")?.as_s().ok()?.clone();
    Some(Chunk { seq, text })
}
