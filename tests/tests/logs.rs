//! Live logs end to end (issue 13): the wrapper really runs (fake DataCrunch in execute mode)
//! and ships its output while the script runs; `GET /jobs/{id}/logs` serves the first lines
//! before the job ends and all of them after teardown; chunks are idempotent and capped.

// Shared with jobs.rs; this file uses a part of it.
#[allow(dead_code, unused_imports)]
mod jobs_support;

use base64::Engine;
use jobs_support::*;
use mimiry_tests::{call, Answer, Stack};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn logs(stack: &Stack, key: &str, id: &str, query: &str) -> Answer {
    call(
        "GET",
        &stack.url(&format!("/jobs/{id}/logs?{query}")),
        Some(key),
        None,
    )
    .await
}

fn lines(answer: &Answer) -> Vec<String> {
    answer.body["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines: {answer:?}"))
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// Reads the whole log from the start, following cursors (bounded).
async fn read_all(stack: &Stack, key: &str, id: &str) -> (Vec<String>, Value) {
    let mut all = Vec::new();
    let mut query = "limit=3".to_string();
    for _ in 0..100 {
        let page = logs(stack, key, id, &query).await;
        assert_eq!(page.status, 200, "{page:?}");
        all.extend(lines(&page));
        if page.body["complete"] == true || page.body["lines"].as_array().unwrap().is_empty() {
            return (all, page.body);
        }
        query = format!(
            "limit=3&after={}",
            page.body["next_cursor"].as_str().unwrap()
        );
    }
    panic!("the log of {id} never ended: {all:?}");
}

#[tokio::test]
async fn the_first_lines_arrive_while_the_job_runs_and_all_stay_after_teardown() {
    let stack = Stack::shared();
    let account = stack.account("100").await;
    let script =
        "#!/bin/bash\nfor i in $(seq 1 8); do echo \"line $i\"; sleep 1; done\necho done >&2";
    let id = submit_ok(stack, &account.key, &cheap_job(None, script)).await;
    let expected: Vec<String> = (1..=8)
        .map(|i| format!("line {i}"))
        .chain(["done".to_string()])
        .collect();

    // Follow with long polls: the first lines come while the job is still running.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut lines_while_running = 0;
    let deadline = Instant::now() + SHORT;
    let last = loop {
        assert!(Instant::now() < deadline, "never complete; saw {seen:?}");
        let query = match &cursor {
            Some(c) => format!("wait=5&after={c}"),
            None => "wait=5".into(),
        };
        let waited = Instant::now();
        let page = logs(stack, &account.key, &id, &query).await;
        assert_eq!(page.status, 200, "{page:?}");
        let got = lines(&page);
        if got.is_empty() && page.body["complete"] == false {
            assert!(
                waited.elapsed() >= Duration::from_secs(4),
                "an empty answer did not wait: {page:?}"
            );
        }
        if page.body["status"] == "running" && page.body["complete"] == false {
            lines_while_running += got.len();
        }
        seen.extend(got);
        cursor = Some(page.body["next_cursor"].as_str().unwrap().to_string());
        if page.body["complete"] == true {
            break page.body;
        }
    };
    assert!(
        lines_while_running >= 2,
        "only {lines_while_running} lines came before the job finished: {seen:?}"
    );
    assert_eq!(seen, expected, "every line once, in order");
    assert_eq!(last["status"], "completed", "{last:#}");
    assert_eq!(last["truncated"], false);

    // After teardown: the instance is gone, the log is all there, from the start and the end.
    let job = wait_terminal(stack, &account.key, &id, SHORT).await.job;
    assert_eq!(job["exit_code"], 0, "{job:#}");
    // Its timeline, oldest first.
    let events = job["events"].as_array().expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let mut sorted = kinds.clone();
    sorted.sort_unstable();
    // `running` (the worker saw the instance run) and `script_started` (the instance's clock)
    // may come in either order.
    assert_eq!(
        sorted,
        [
            "deploy_requested",
            "finished",
            "instance_deleted",
            "report_received",
            "running",
            "script_started",
            "submitted"
        ],
        "{job:#}"
    );
    assert_eq!(kinds[0], "submitted");
    assert_eq!(kinds[6], "finished");
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let report = events
        .iter()
        .find(|e| e["type"] == "report_received")
        .unwrap();
    assert_eq!(report["detail"]["exit_code"], 0);
    assert_eq!(events[6]["detail"]["status"], "completed");
    assert_eq!(events[6]["detail"]["charged"], job["cost"]);
    let state = fake_state(stack).await;
    assert!(
        instances_of(&state, &id)
            .iter()
            .all(|i| i["deleted"] == true),
        "{state:#}"
    );
    let (all, end) = read_all(stack, &account.key, &id).await;
    assert_eq!(all, expected);
    assert_eq!(end["complete"], true, "{end:#}");
    let tail = logs(stack, &account.key, &id, "tail=3").await;
    assert_eq!(lines(&tail), ["line 7", "line 8", "done"], "{tail:?}");
    assert_eq!(tail.body["complete"], true);
    // The tail's cursor is the log's end.
    let after_tail = logs(
        stack,
        &account.key,
        &id,
        &format!("after={}", tail.body["next_cursor"].as_str().unwrap()),
    )
    .await;
    assert_eq!(lines(&after_tail), Vec::<String>::new(), "{after_tail:?}");
}

#[tokio::test]
async fn bad_log_queries_are_400s_naming_the_parameter() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let id = submit_ok(stack, &account.key, &cheap_job(None, "echo hi")).await;
    for (query, field) in [
        ("wait=21", "wait"),
        ("limit=0", "limit"),
        ("tail=x", "tail"),
        ("after=bm9wZQ", "after"),
        ("tail=3&after=djE6bG9nOjA6MA", "tail"),
        ("follow=1", "follow"),
    ] {
        let answer = logs(stack, &account.key, &id, query).await;
        assert_eq!(answer.status, 400, "{query}: {answer:?}");
        assert_eq!(
            answer.body["details"]["field"], field,
            "{query}: {answer:?}"
        );
    }
    let nobody = uuid::Uuid::now_v7();
    let answer = logs(stack, &account.key, &nobody.to_string(), "").await;
    assert_eq!(answer.status, 404, "{answer:?}");
}

async fn ship(stack: &Stack, token: &str, id: &str, seq: u64, data: &[u8]) -> Answer {
    let body = json!({
        "seq": seq,
        "data_base64": base64::engine::general_purpose::STANDARD.encode(data),
    });
    call(
        "POST",
        &stack.url(&format!("/jobs/{id}/logs")),
        Some(token),
        Some(&body),
    )
    .await
}

/// A retried chunk is stored once; past the cap nothing more is kept and the log ends with one
/// truncation line.
#[tokio::test]
async fn chunks_are_idempotent_and_the_log_is_capped() {
    let stack = Stack::shared();
    let account = stack.account("20").await;
    let id = submit_ok(stack, &account.key, &cheap_job(None, "sleep 300")).await;
    wait_status(stack, &account.key, &id, "running", SHORT).await;
    let token = report_token(stack, &id).await;

    for _ in 0..2 {
        let answer = ship(stack, &token, &id, 0, b"first\nsecond\n").await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["stored"], true, "{answer:?}");
    }
    // A different body under a stored number changes nothing (the first write wins).
    ship(stack, &token, &id, 0, b"forged\n").await;
    let page = logs(stack, &account.key, &id, "").await;
    assert_eq!(lines(&page), ["first", "second"], "{page:?}");
    assert_eq!(
        page.body["complete"], false,
        "a running job's log is not complete"
    );
    // Stored where a_quiet_job_ships_nothing looks, with its retention.
    let stored = stack
        .store()
        .await
        .query_prefix(format!("JOBLOG#{}#{id}", account.account_id), "CHUNK#")
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let expires: i64 = stored[0]["expires_at"].as_n().unwrap().parse().unwrap();
    let in_days = (expires - chrono::Utc::now().timestamp()) / 86_400;
    assert!((29..=30).contains(&in_days), "expires in {in_days} days");

    // An API key is not a job token.
    let answer = ship(stack, &account.key, &id, 1, b"x\n").await;
    assert_eq!(answer.status, 401, "{answer:?}");
    // Over-long and empty chunks are refused.
    let answer = ship(stack, &token, &id, 1, &vec![b'x'; 64 * 1024 + 1]).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let answer = ship(stack, &token, &id, 1, b"").await;
    assert_eq!(answer.status, 400, "{answer:?}");

    // Fill the 10 MiB cap with 64 KiB chunks.
    let mut line = vec![b'y'; 64 * 1024 - 1];
    line.push(b'\n');
    let mut truncated_at = None;
    for seq in 1..=170u64 {
        let answer = ship(stack, &token, &id, seq, &line).await;
        assert_eq!(answer.status, 200, "chunk {seq}: {answer:?}");
        if answer.body["truncated"] == true {
            assert_eq!(answer.body["stored"], false, "{answer:?}");
            truncated_at = Some(seq);
            break;
        }
    }
    let truncated_at = truncated_at.expect("the cap was never reached");
    assert!(
        (155..=161).contains(&truncated_at),
        "cut at chunk {truncated_at}"
    );
    let again = ship(stack, &token, &id, truncated_at + 1, b"more\n").await;
    assert_eq!(again.body["truncated"], true, "{again:?}");
    let tail = logs(stack, &account.key, &id, "tail=2").await;
    let tail_lines = lines(&tail);
    assert_eq!(tail.body["truncated"], true, "{tail:?}");
    assert!(tail_lines[0].starts_with("yyyy"), "{:.80?}", tail_lines[0]);
    assert!(
        tail_lines[1].starts_with("[mimiry] log truncated"),
        "{:?}",
        tail_lines[1]
    );
    cancel(stack, &account.key, &id).await;
}

/// A chatty job: 200 000 lines as fast as `seq` prints them (1.3 MB, ~21 full chunks shipped
/// back to back) all arrive, in order, before the job completes. Prints the shipping rate: the
/// "log lines per second one job can ship" figure of issue 13 (local stack, debug build).
#[tokio::test]
async fn a_chatty_job_ships_every_line() {
    let stack = Stack::shared();
    let account = stack.account("100").await;
    let id = submit_ok(
        stack,
        &account.key,
        &cheap_job(None, "seq 1 200000\nsleep 1\necho end"),
    )
    .await;
    wait_status(stack, &account.key, &id, "running", SHORT).await;
    let started = Instant::now();
    let mut count = 0usize;
    let mut last = String::new();
    let mut expected_next = 1u64;
    let mut all_read_at = None;
    let mut query = "wait=10&limit=10000".to_string();
    let deadline = started + SHORT;
    loop {
        assert!(Instant::now() < deadline, "only {count} lines so far");
        let page = logs(stack, &account.key, &id, &query).await;
        assert_eq!(page.status, 200, "{page:?}");
        for line in lines(&page) {
            if expected_next <= 200_000 {
                assert_eq!(line, expected_next.to_string(), "line {count}");
                expected_next += 1;
                if expected_next > 200_000 {
                    all_read_at = Some(started.elapsed());
                }
            }
            count += 1;
            last = line;
        }
        if page.body["complete"] == true {
            break;
        }
        query = format!(
            "wait=10&limit=10000&after={}",
            page.body["next_cursor"].as_str().unwrap()
        );
    }
    let elapsed = all_read_at.expect("every number was read");
    assert_eq!(count, 200_001);
    assert_eq!(last, "end");
    println!(
        "shipped and read 200000 lines in {elapsed:.1?} from `running`: {:.0} lines/s",
        200_000.0 / elapsed.as_secs_f64()
    );
}

/// A quiet job (no output) ships nothing: no log item is written for it, so logs add no AWS
/// request to its hour; its log is empty and complete once it ended.
#[tokio::test]
async fn a_quiet_job_ships_nothing() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let id = submit_ok(stack, &account.key, &cheap_job(None, "sleep 3")).await;
    let job = wait_terminal(stack, &account.key, &id, SHORT).await.job;
    assert_eq!(job["status"], "completed", "{job:#}");
    let store = stack.store().await;
    let mut items = Vec::new();
    for prefix in ["CHUNK#", "META"] {
        items.extend(
            store
                .query_prefix(format!("JOBLOG#{}#{id}", account.account_id), prefix)
                .await
                .unwrap(),
        );
    }
    assert!(items.is_empty(), "log items of a quiet job: {items:?}");
    let page = logs(stack, &account.key, &id, "").await;
    assert_eq!(lines(&page), Vec::<String>::new());
    assert_eq!(page.body["complete"], true, "{page:?}");
}
