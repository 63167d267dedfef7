//! A job's live log: the wrapper on the instance ships its script's output in numbered chunks
//! (`POST /jobs/{id}/logs`), and `GET /jobs/{id}/logs` reads it back as lines after a cursor.
//!
//! A chunk is immutable once stored (the first write of a sequence number wins, so the wrapper's
//! retries are harmless), and the wrapper ships the chunks in order, one at a time. A position
//! in the log is therefore `(chunk seq, lines of it already read)`, which is what a cursor holds.

use crate::error::ApiError;
use crate::store::cursor;
use crate::store::Store;
use std::time::{Duration, Instant};

/// Raw bytes of output the wrapper puts in one chunk at most (before base64).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Seconds the wrapper waits between two shipments while output trickles in.
pub const SHIP_INTERVAL_SECS: u32 = 2;
/// Bytes of log kept per job; past them the log ends with [`TRUNCATION_MARKER`].
pub const CAP_BYTES: u64 = 10 * 1024 * 1024;
/// How long a log is kept after its last chunk (DynamoDB TTL on `expires_at`).
pub const RETENTION_SECS: i64 = 30 * 24 * 3600;
/// The sequence number of the truncation marker: after any chunk the wrapper can send.
pub const MARKER_SEQ: u64 = 9_999_999_999;
/// The highest sequence number a wrapper may use.
pub const MAX_SEQ: u64 = 999_999_999;
/// The line that ends a log cut at [`CAP_BYTES`].
pub const TRUNCATION_MARKER: &str = "[mimiry] log truncated: this job's output passed the 10 MiB \
     log cap; the last 4 KiB of it are in the job's output_tail (GET /jobs/{id})";

/// Lines one `GET /jobs/{id}/logs` returns by default and at most.
pub const DEFAULT_LINES: usize = 1000;
pub const MAX_LINES: usize = 10_000;
/// Bytes of text one page returns at most (a Lambda response is at most 6 MB).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// Seconds `?wait=` may hold a request (API Gateway gives up at 30 s).
pub const MAX_WAIT_SECS: u64 = 20;

/// A stored chunk: its sequence number and text (invalid UTF-8 replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub seq: u64,
    pub text: String,
}

impl Chunk {
    /// The chunk's lines, without their `\n`. A chunk ends on a line break unless the wrapper
    /// had to cut a line longer than a chunk (or the output did not end with one): that last
    /// piece is a line of its own.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text
            .strip_suffix('\n')
            .unwrap_or(&self.text)
            .split('\n')
    }
}

/// A position in a job's log: the next line to read is line `line` of chunk `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub seq: u64,
    pub line: usize,
}

impl Position {
    pub fn to_cursor(self) -> String {
        cursor::encode(&format!("log:{}:{}", self.seq, self.line))
    }

    /// 400 naming `after` when the cursor is not one of ours.
    pub fn from_cursor(text: &str) -> Result<Position, ApiError> {
        let invalid = || {
            ApiError::validation(
                "after",
                "Invalid cursor: pass back the next_cursor of a previous answer",
            )
        };
        let position = cursor::decode(text).map_err(|_| invalid())?;
        let (seq, line) = position
            .strip_prefix("log:")
            .and_then(|p| p.split_once(':'))
            .ok_or_else(invalid)?;
        Ok(Position {
            seq: seq.parse().map_err(|_| invalid())?,
            line: line.parse().map_err(|_| invalid())?,
        })
    }
}

/// A page of lines and the position after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub lines: Vec<String>,
    pub next: Position,
    /// Whether chunks were left unread (the page was full).
    pub more: bool,
    pub truncated: bool,
}

/// The lines after `from` in `chunks` (in sequence order, starting at or after `from.seq`),
/// at most `limit` lines and about [`MAX_PAGE_BYTES`].
pub fn page_after(chunks: &[Chunk], from: Position, limit: usize) -> Page {
    let mut page = Page {
        lines: Vec::new(),
        next: from,
        more: false,
        truncated: false,
    };
    let mut bytes = 0;
    for chunk in chunks.iter().filter(|c| c.seq >= from.seq) {
        let skip = if chunk.seq == from.seq { from.line } else { 0 };
        let count = chunk.lines().count();
        for (i, line) in chunk.lines().enumerate().skip(skip) {
            if page.lines.len() >= limit || (bytes > 0 && bytes + line.len() > MAX_PAGE_BYTES) {
                page.more = true;
                return page;
            }
            bytes += line.len();
            page.lines.push(line.to_string());
            page.next = after_line(chunk.seq, i, count);
        }
        page.truncated |= chunk.seq == MARKER_SEQ;
    }
    page
}

/// The position after line `i` of the `count` lines of chunk `seq`. At a chunk's end it is the
/// next chunk's start, so a follower's next read does not fetch the finished chunk again (the
/// marker, which nothing follows, keeps its own position).
fn after_line(seq: u64, i: usize, count: usize) -> Position {
    if i + 1 >= count && seq < MARKER_SEQ {
        Position {
            seq: seq + 1,
            line: 0,
        }
    } else {
        Position { seq, line: i + 1 }
    }
}

/// The last `n` lines of `chunks` (in sequence order, ending with the log's last chunk).
pub fn tail(chunks: &[Chunk], n: usize) -> Page {
    let mut lines: Vec<(u64, usize, &str)> = chunks
        .iter()
        .flat_map(|c| c.lines().enumerate().map(move |(i, l)| (c.seq, i, l)))
        .collect();
    lines.drain(..lines.len().saturating_sub(n));
    // The last line is the last of its chunk.
    let next = lines
        .last()
        .map(|&(seq, i, _)| after_line(seq, i, i + 1))
        .unwrap_or_default();
    Page {
        lines: lines.into_iter().map(|(_, _, l)| l.to_string()).collect(),
        next,
        more: false,
        truncated: chunks.iter().any(|c| c.seq == MARKER_SEQ),
    }
}

/// What a reader asks of a job's log (`GET /jobs/{id}/logs` and the dashboard's job page).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogQuery {
    /// Lines after this position (the start when `None`).
    pub after: Option<Position>,
    /// The last N lines instead (cannot be combined with `after`).
    pub tail: Option<usize>,
    /// Lines per answer at most (1..=[`MAX_LINES`]).
    pub limit: usize,
    /// Seconds to wait for new lines (at most [`MAX_WAIT_SECS`]).
    pub wait_secs: u64,
}

/// A reader's answer: the lines, where to go on, and whether the log is complete.
#[derive(Debug, Clone)]
pub struct LogAnswer {
    pub status: crate::jobs::JobStatus,
    pub page: Page,
    /// The job is finished and every chunk is read.
    pub complete: bool,
}

impl LogAnswer {
    /// The JSON both readers answer.
    pub fn to_json(&self, job_id: &str) -> serde_json::Value {
        serde_json::json!({
            "job_id": job_id,
            "status": self.status.as_str(),
            "lines": self.page.lines,
            "next_cursor": self.page.next.to_cursor(),
            "complete": self.complete,
            "truncated": self.page.truncated,
        })
    }
}

/// How often a long poll looks for new lines.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Reads the caller's own job's log: one pass, or a long poll of at most `wait_secs` that
/// answers as soon as there are lines or the job completes. 404 when the job is not theirs.
pub async fn read(
    store: &Store,
    account_id: &str,
    job_id: &str,
    query: LogQuery,
) -> Result<LogAnswer, ApiError> {
    if query.tail.is_some() && query.after.is_some() {
        return Err(ApiError::validation(
            "tail",
            "tail reads the end of the log; it cannot be combined with after",
        ));
    }
    let from = query.after.unwrap_or_default();
    let limit = query.limit.clamp(1, MAX_LINES);
    let deadline = Instant::now() + Duration::from_secs(query.wait_secs.min(MAX_WAIT_SECS));
    // Bounded by the deadline (at most MAX_WAIT_SECS): one pass when there is no wait.
    loop {
        // The job before the chunks: the wrapper ships its last chunk before it reports, so a
        // job already finished here has every chunk it will ever have stored below.
        let job = store
            .get_job(account_id, job_id)
            .await?
            .ok_or(ApiError::NotFound("Job"))?;
        let page = match query.tail {
            Some(n) => tail(&store.log_chunks_tail(account_id, job_id, n).await?, n),
            None => {
                let (chunks, more) = store
                    .log_chunks_from(account_id, job_id, from.seq, limit, MAX_PAGE_BYTES)
                    .await?;
                let mut page = page_after(&chunks, from, limit);
                page.more |= more;
                page
            }
        };
        let complete = job.status.is_terminal() && !page.more;
        let now = Instant::now();
        if !page.lines.is_empty() || complete || now >= deadline {
            return Ok(LogAnswer {
                status: job.status,
                page,
                complete,
            });
        }
        tokio::time::sleep(POLL_EVERY.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, text: &str) -> Chunk {
        Chunk {
            seq,
            text: text.into(),
        }
    }

    #[test]
    fn pages_walk_every_line_once() {
        let chunks = [chunk(0, "a\nb\n"), chunk(1, "c\n"), chunk(2, "d\ne")];
        let first = page_after(&chunks, Position::default(), 3);
        assert_eq!(first.lines, ["a", "b", "c"]);
        assert!(first.more);
        let second = page_after(&chunks, first.next, 3);
        assert_eq!(second.lines, ["d", "e"]);
        assert!(!second.more);
        let third = page_after(&chunks, second.next, 3);
        assert!(third.lines.is_empty());
        assert_eq!(third.next, second.next, "an empty page keeps the position");
        assert_eq!(
            page_after(&chunks, Position::default(), 2).next,
            Position { seq: 1, line: 0 },
            "a page ending with its chunk points at the next chunk"
        );
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let p = Position { seq: 7, line: 3 };
        assert_eq!(Position::from_cursor(&p.to_cursor()).unwrap(), p);
        assert!(Position::from_cursor("nope").is_err());
        assert!(Position::from_cursor(&cursor::encode("log:x:1")).is_err());
        assert!(Position::from_cursor(&cursor::encode("job:1:1")).is_err());
    }

    #[test]
    fn tail_takes_the_last_lines_across_chunks() {
        let chunks = [chunk(0, "a\nb\n"), chunk(1, "c\n"), chunk(2, "d\n")];
        let t = tail(&chunks, 3);
        assert_eq!(t.lines, ["b", "c", "d"]);
        assert_eq!(page_after(&chunks, t.next, 10).lines, Vec::<String>::new());
        assert_eq!(tail(&[], 3).next, Position::default());
    }

    #[test]
    fn the_marker_ends_a_truncated_log() {
        let chunks = [chunk(0, "a\n"), chunk(MARKER_SEQ, TRUNCATION_MARKER)];
        let p = page_after(&chunks, Position::default(), 10);
        assert!(p.truncated);
        assert_eq!(p.lines.last().unwrap(), TRUNCATION_MARKER);
    }
}
