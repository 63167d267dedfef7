//! Following a job: its status on stderr (a spinner on a terminal), its log lines on stdout as
//! they come, through `GET /jobs/{id}/logs?wait=` (API Gateway cannot stream a response, so
//! the CLI long-polls: one request per 20 s while the job is quiet).

use crate::api::{Api, CliError};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the status line shows, shared with the spinner's task.
#[derive(Clone, Default)]
struct Status(Arc<Mutex<Option<String>>>);

impl Status {
    fn set(&self, text: Option<String>) {
        *self.0.lock().expect("status lock") = text;
    }
}

/// Draws `⠋ provisioning (12 s)` on a terminal until the job runs; elsewhere the status changes
/// are printed as lines by [`follow`].
fn spinner(status: Status) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let started = Instant::now();
        let mut shown = false;
        for frame in FRAMES.iter().cycle() {
            let text = status.0.lock().expect("status lock").clone();
            // Cleared once when the status goes away, so log lines are never wiped.
            if text.is_some() || shown {
                draw(*frame, text.as_deref(), started.elapsed().as_secs());
            }
            shown = text.is_some();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }))
}

/// One frame of the status line (a plain function: the stderr lock must not live across an
/// `.await` of the spinner's task).
fn draw(frame: char, text: Option<&str>, secs: u64) {
    let mut err = std::io::stderr().lock();
    let _ = match text {
        Some(t) => write!(err, "\r\x1b[2K{frame} {t} ({secs} s)"),
        None => write!(err, "\r\x1b[2K"),
    };
    let _ = err.flush();
}

/// Follows the log of `job_id` from the start (or its last `tail` lines) to the end; returns
/// the job as it finally stands (`GET /jobs/{id}`), or `None` when the user detached.
/// `lines_to_stderr` keeps stdout for `--json`.
pub async fn follow(
    api: &Api,
    job_id: &str,
    tail: Option<u32>,
    lines_to_stderr: bool,
    ask_to_cancel: bool,
) -> Result<Option<Value>, CliError> {
    let status = Status::default();
    let spin = spinner(status.clone());
    let result = follow_inner(api, job_id, tail, lines_to_stderr, ask_to_cancel, &status).await;
    status.set(None);
    if let Some(handle) = spin {
        handle.abort();
        eprint!("\r\x1b[2K");
    }
    result
}

async fn follow_inner(
    api: &Api,
    job_id: &str,
    tail: Option<u32>,
    lines_to_stderr: bool,
    ask_to_cancel: bool,
    status_line: &Status,
) -> Result<Option<Value>, CliError> {
    let terminal = std::io::stderr().is_terminal();
    let mut cursor: Option<String> = None;
    let mut last_status = String::new();
    let mut cancelled = false;
    // A job lives at most 30 days (max_runtime_seconds); at one long poll per 20 s or less,
    // this bounds the loop well beyond that.
    // One Ctrl-C listener for the whole follow, so a Ctrl-C between two requests is not lost
    // (once it is installed, Ctrl-C no longer ends the process: every press must be answered).
    let mut interrupt = Box::pin(tokio::signal::ctrl_c());
    let mut pause = false;
    for _ in 0..200_000 {
        // Until the job runs, a quick look every second, so the status moves on screen (a long
        // poll answers only when lines come); then long polls.
        let running = last_status == "running";
        let wait = if running { 20 } else { 0 };
        let query = match (&cursor, tail) {
            (Some(c), _) => format!("after={c}&wait={wait}"),
            (None, Some(n)) => format!("tail={n}&wait={wait}"),
            (None, None) => format!("wait={wait}"),
        };
        let path = format!("/jobs/{job_id}/logs?{query}");
        let fetch = async {
            if pause {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            api.get(&path).await
        };
        let page = tokio::select! {
            page = fetch => page?,
            _ = &mut interrupt, if ask_to_cancel => {
                interrupt = Box::pin(tokio::signal::ctrl_c());
                status_line.set(None);
                let answer = if cancelled { None } else { ask("\nCancel the job? [y/N] ").await };
                match answer {
                    Some(true) => {
                        let answer = api.delete(&format!("/jobs/{job_id}")).await?;
                        eprintln!("cancel requested ({}); following until the instance is gone",
                            answer["status"].as_str().unwrap_or("?"));
                        cancelled = true;
                    }
                    Some(false) => eprintln!("still following; `mimiry cancel {job_id}` cancels it"),
                    None if cancelled => {
                        eprintln!("stopped following; the job is being cancelled");
                        return Ok(None);
                    }
                    None => {
                        eprintln!("detached: the job goes on; `mimiry logs -f {job_id}` follows it");
                        return Ok(None);
                    }
                }
                pause = false;
                continue;
            }
        };
        let status = page["status"].as_str().unwrap_or("?").to_string();
        if status != last_status {
            if terminal && status != "running" && !page["complete"].as_bool().unwrap_or(false) {
                status_line.set(Some(status.clone()));
            } else {
                status_line.set(None);
                eprintln!("{}", paint(&format!("── {status}")));
            }
            last_status = status;
        }
        let lines = page["lines"].as_array().cloned().unwrap_or_default();
        if !lines.is_empty() {
            status_line.set(None);
            let text: String = lines
                .iter()
                .map(|l| format!("{}\n", l.as_str().unwrap_or("")))
                .collect();
            if lines_to_stderr {
                eprint!("{text}");
            } else {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if page["complete"].as_bool().unwrap_or(false) {
            return api.get(&format!("/jobs/{job_id}")).await.map(Some);
        }
        pause = !running && lines.is_empty();
    }
    Err(CliError::Usage("gave up following the job".into()))
}

fn paint(text: &str) -> String {
    if std::io::stderr().is_terminal() {
        format!("\x1b[2m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Asks a yes/no question on the terminal; `None` when there is no one to answer (stdin closed).
async fn ask(question: &str) -> Option<bool> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(matches!(line.trim(), "y" | "Y" | "yes")),
        }
    })
    .await
    .ok()
    .flatten()
}

/// The process exit code for a finished job: the script's own, else 1 (with the reason on
/// stderr); a cancelled job 130, as after a Ctrl-C.
pub fn exit_code(job: &Value) -> i32 {
    let status = job["status"].as_str().unwrap_or("");
    let code = job["exit_code"].as_i64();
    if status != "completed" {
        let reason = job["failure_reason"].as_str().unwrap_or(status);
        let message = job["error_message"].as_str().unwrap_or("");
        eprintln!(
            "job {status}: {reason}{}{message}",
            if message.is_empty() { "" } else { ": " }
        );
    }
    match (status, code) {
        (_, Some(c)) => c as i32,
        ("completed", None) => 0,
        ("cancelled", None) => 130,
        _ => 1,
    }
}
