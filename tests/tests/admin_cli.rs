//! The operator CLI (`mimiry-admin`) as an operator runs it, against the test stack's moto:
//! it ends quietly when its reader goes away (`mimiry-admin … | head`), and the report token it
//! prints is the one the report route takes.

use mimiry_tests::{bin, call, record_secret, Stack};
use serde_json::json;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `mimiry-admin ARGS` against the stack, as `infra/local-stack.sh` runs it.
fn admin(stack: &Stack, args: &[&str]) -> Command {
    let mut command = Command::new(bin("mimiry-admin"));
    command
        .args(args)
        .env("AWS_ENDPOINT_URL", &stack.moto_url)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("TABLE_NAME", &stack.table);
    command
}

fn run(mut command: Command) -> Output {
    let out = command.output().expect("running mimiry-admin");
    assert!(
        out.status.success(),
        "mimiry-admin failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A pipe whose reading end is already closed: what `mimiry-admin … | head -n 1` writes into
/// once `head` has its line, without the race of waiting for `head` to exit.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills both descriptors on success; each is owned exactly once below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe(2)");
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let mut command = admin(stack, &["show-account", "--account", &account.account_id]);
    command
        .stdout(Stdio::from(closed_pipe()))
        .stderr(Stdio::piped());
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "a closed stdout made mimiry-admin panic: {stderr}"
    );
    // The way `ls | head` ends: killed by SIGPIPE at the first write, with nothing said.
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "expected death by SIGPIPE, got {:?}; stderr: {stderr}",
        out.status
    );
    assert!(stderr.is_empty(), "nothing on stderr either: {stderr}");

    // And with a reader, the same command prints the account (the test above did reach it).
    let out = run(admin(
        stack,
        &["show-account", "--account", &account.account_id],
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("account_id: {}\n", account.account_id)),
        "{text}"
    );
}

#[tokio::test]
async fn report_token_is_the_one_the_report_route_takes() {
    let stack = Stack::shared();
    let account = stack.account("10").await;
    let job = json!({
        "instance_type": "CPU.4V.16G", "image": "ubuntu-22.04", "location": "FIN-01",
        "startup_script": "#!/bin/bash\nsleep 60",
    });
    let submitted = call("POST", &stack.url("/jobs"), Some(&account.key), Some(&job)).await;
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let job_id = submitted.body["id"].as_str().unwrap().to_string();

    // A report is taken once the job runs (its instance is the one that reports).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = call(
            "GET",
            &stack.url(&format!("/jobs/{job_id}")),
            Some(&account.key),
            None,
        )
        .await;
        if seen.body["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "never running: {seen:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let out = run(admin(
        stack,
        &[
            "report-token",
            "--account",
            &account.account_id,
            "--job",
            &job_id,
        ],
    ));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    record_secret(&token);
    let report = json!({ "exit_code": 0, "output": "reported by the operator" });
    let url = stack.url(&format!("/jobs/{job_id}/report"));
    let answer = call("POST", &url, Some(&token), Some(&report)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, json!({ "job_id": job_id, "recorded": true }));

    // A job that is not in the account gets no token, and an error that says why.
    let out = admin(
        stack,
        &[
            "report-token",
            "--account",
            &account.account_id,
            "--job",
            "01a222d6-c383-7154-a69c-646a8178e043",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no token printed");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no job"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
