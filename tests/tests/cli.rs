//! The `mimiry` CLI (cli/), the built binary against the local stack: `mimiry run` shows the
//! script's lines as they come and exits with the script's exit code (issue 13).

// Shared with jobs.rs; this file uses a part of it.
#[allow(dead_code, unused_imports)]
mod jobs_support;

use jobs_support::*;
use mimiry_tests::{bin, Stack};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// `mimiry` with the stack's URL and `key`, and no config file of the machine's user.
fn mimiry(stack: &Stack, key: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin("mimiry"));
    cmd.env("MIMIRY_API_URL", stack.url(""))
        .env("MIMIRY_API_KEY", key)
        .env("MIMIRY_CONFIG", "/nonexistent/mimiry.toml")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

fn script_file(body: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("mimiry-cli-{}.sh", uuid::Uuid::new_v4()));
    std::fs::write(&path, body).unwrap();
    path
}

/// Runs `mimiry run` of a script printing a line a second and exiting `code`: every line on
/// stdout, the first well before the end, and the script's exit code as the CLI's.
async fn run_exits_with(code: i32) {
    let stack = Stack::shared();
    let account = stack.account("100").await;
    let script = script_file(&format!(
        "for i in 1 2 3 4 5; do echo \"tick $i\"; sleep 1; done\nexit {code}\n"
    ));
    let mut child = mimiry(stack, &account.key)
        .args(["run", "--type", CHEAP_TYPE, "--image", CHEAP_IMAGE])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut lines: Vec<(String, Duration)> = Vec::new();
    let read = tokio::time::timeout(SHORT, async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            lines.push((line, started.elapsed()));
        }
    })
    .await;
    assert!(read.is_ok(), "mimiry run did not finish; lines {lines:?}");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("mimiry exits once its output ends")
        .unwrap();
    let ended = started.elapsed();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    let texts: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        texts,
        ["tick 1", "tick 2", "tick 3", "tick 4", "tick 5"],
        "stderr: {stderr}"
    );
    assert_eq!(status.code(), Some(code), "stderr: {stderr}");
    // Live: the first line came while the script still had seconds to run.
    assert!(
        lines[0].1 + Duration::from_secs(2) < ended,
        "first line at {:?}, end at {ended:?}",
        lines[0].1
    );
    for status in ["queued", "running"] {
        assert!(stderr.contains(status), "no `{status}` in: {stderr}");
    }
    if code != 0 {
        assert!(stderr.contains("script_failed"), "{stderr}");
    }
    let _ = std::fs::remove_file(script);
}

#[tokio::test]
async fn run_streams_the_lines_and_exits_0() {
    run_exits_with(0).await;
}

#[tokio::test]
async fn run_streams_the_lines_and_exits_with_the_scripts_code() {
    run_exits_with(3).await;
}

/// The other commands, in their `--json` form (what scripts use), and the text form of `logs`.
#[tokio::test]
async fn jobs_logs_cancel_account_and_ssh_keys() {
    let stack = Stack::shared();
    let account = stack.account("100").await;
    let out = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let json = |text: String| -> Value { serde_json::from_str(&text).unwrap() };

    let acc = json(out(mimiry(stack, &account.key)
        .args(["--json", "account"])
        .output()
        .await
        .unwrap()));
    assert_eq!(acc["account_id"], account.account_id.as_str());

    let key_file = script_file(&format!("{}\n", mimiry_tests::ssh_public_key()));
    let key = json(out(mimiry(stack, &account.key)
        .args(["--json", "ssh-keys", "add"])
        .arg(&key_file)
        .output()
        .await
        .unwrap()));
    assert!(key["id"].is_string(), "{key:#}");

    let script = script_file("echo one\necho two\n");
    let id = out(mimiry(stack, &account.key)
        .args(["run", "-d", "--type", CHEAP_TYPE, "--image", CHEAP_IMAGE])
        .arg(&script)
        .output()
        .await
        .unwrap())
    .trim()
    .to_string();
    wait_terminal(stack, &account.key, &id, SHORT).await;
    let logs = out(mimiry(stack, &account.key)
        .args(["logs", &id])
        .output()
        .await
        .unwrap());
    assert_eq!(logs, "one\ntwo\n");
    let list = json(out(mimiry(stack, &account.key)
        .args(["--json", "jobs"])
        .output()
        .await
        .unwrap()));
    assert_eq!(list["jobs"][0]["id"], id.as_str(), "{list:#}");

    let sleeper = script_file("sleep 300\n");
    let id = out(mimiry(stack, &account.key)
        .args(["run", "-d", "--type", CHEAP_TYPE, "--image", CHEAP_IMAGE])
        .arg(&sleeper)
        .output()
        .await
        .unwrap())
    .trim()
    .to_string();
    let cancelled = json(out(mimiry(stack, &account.key)
        .args(["--json", "cancel", &id])
        .output()
        .await
        .unwrap()));
    assert!(
        cancelled["status"] == "cancelled" || cancelled["cancel_requested"] == true,
        "{cancelled:#}"
    );
    // A bad key is an error with the API's message, and a non-zero exit.
    let refused = mimiry(stack, "mky_nope")
        .args(["jobs"])
        .output()
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );
    for f in [key_file, script, sleeper] {
        let _ = std::fs::remove_file(f);
    }
}

/// Ctrl-C during `mimiry run` asks whether to cancel; `y` cancels the job, the CLI follows it to
/// the end and exits 130.
#[tokio::test]
async fn ctrl_c_asks_and_cancels() {
    let stack = Stack::shared();
    let account = stack.account("100").await;
    let script = script_file("echo started\nsleep 300\n");
    let mut child = mimiry(stack, &account.key)
        .args(["run", "--type", CHEAP_TYPE, "--image", CHEAP_IMAGE])
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first line means the job runs and the CLI follows it.
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(SHORT, stdout.next_line())
        .await
        .expect("no line from the job")
        .unwrap();
    assert_eq!(first.as_deref(), Some("started"));
    let pid = child.id().unwrap() as libc::pid_t;
    // SAFETY: a plain kill(2) of the child this test spawned.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"y\n")
        .await
        .unwrap();
    let status = tokio::time::timeout(SHORT, child.wait())
        .await
        .expect("mimiry did not end after the cancel")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("Cancel the job?"), "{stderr}");
    assert_eq!(status.code(), Some(130), "{stderr}");
    let id = stderr
        .split_whitespace()
        .nth(1)
        .expect("job id on stderr")
        .to_string();
    let job = get_job(stack, &account.key, &id).await;
    assert_eq!(job.body["status"], "cancelled", "{job:?}");
    let _ = std::fs::remove_file(script);
}
