//! The script the instance really runs: the user's script, then a report of its exit code and
//! the tail of its output to `POST /jobs/{id}/report`, then — with `auto_shutdown` — a shutdown.
//!
//! The user's script travels base64-encoded so no content of it can break out of the wrapper.

use base64::Engine;

/// Bytes of output kept for the report.
pub const OUTPUT_TAIL_BYTES: usize = 4096;

pub struct WrapperInput<'a> {
    pub job_id: &'a str,
    pub user_script: &'a str,
    pub report_url: &'a str,
    pub report_token: &'a str,
    pub auto_shutdown: bool,
}

pub fn wrap(input: &WrapperInput) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(input.user_script.as_bytes());
    let shutdown = if input.auto_shutdown {
        "shutdown -h now || poweroff || true"
    } else {
        ": # auto_shutdown is off: the instance stays up until the job is cancelled"
    };
    format!(
        r#"#!/bin/bash
# Mimiry job {job_id}: runs your script, reports its exit code and output, then {after}.
set -u
dir=$(mktemp -d /tmp/mimiry-job.XXXXXX)
echo '{encoded}' | base64 -d > "$dir/script"
chmod +x "$dir/script"
cd "$dir"
started=$(date +%s%3N)
bash "$dir/script" > "$dir/output.log" 2>&1
code=$?
tail -c {tail} "$dir/output.log" | base64 -w0 > "$dir/tail.b64"
printf '{{"exit_code":%d,"started_at_ms":%d,"output_base64":"%s"}}' "$code" "$started" "$(cat "$dir/tail.b64")" > "$dir/report.json"
for attempt in 1 2 3 4 5 6 7 8; do
  if curl -fsS --max-time 15 -X POST '{report_url}' \
      -H 'Authorization: Bearer {token}' \
      -H 'Content-Type: application/json' \
      --data-binary "@$dir/report.json" >/dev/null; then
    break
  fi
  sleep $((attempt * 2))
done
{shutdown}
"#,
        job_id = input.job_id,
        after = if input.auto_shutdown {
            "shuts the instance down"
        } else {
            "leaves it running"
        },
        encoded = encoded,
        tail = OUTPUT_TAIL_BYTES,
        report_url = input.report_url,
        token = input.report_token,
        shutdown = shutdown,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs the wrapper with bash, with `curl` and `shutdown` replaced by recorders, and checks
    /// what it would have reported.
    #[test]
    fn wrapper_runs_the_script_and_reports_exit_code_and_output() {
        let dir = std::env::temp_dir().join(format!("wrapper-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let log = dir.join("calls.log");
        std::fs::write(
            dir.join("bin/curl"),
            format!("#!/bin/bash\nfor a in \"$@\"; do case \"$a\" in @*) cat \"${{a#@}}\" >> {0};; esac; done\necho \" curl $*\" >> {0}\n", log.display()),
        )
        .unwrap();
        std::fs::write(
            dir.join("bin/shutdown"),
            format!("#!/bin/bash\necho shutdown $* >> {}\n", log.display()),
        )
        .unwrap();
        for f in ["curl", "shutdown"] {
            Command::new("chmod")
                .arg("+x")
                .arg(dir.join("bin").join(f))
                .status()
                .unwrap();
        }
        let script = wrap(&WrapperInput {
            job_id: "j1",
            user_script:
                "#!/bin/bash\necho \"Hello from Mimiry!\"\necho 'quote\" and $HOME'\nexit 3",
            report_url: "http://127.0.0.1:1/jobs/j1/report",
            report_token: "acc.tok",
            auto_shutdown: true,
        });
        std::fs::write(dir.join("wrapper.sh"), script).unwrap();
        let path = format!(
            "{}:{}",
            dir.join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        let status = Command::new("bash")
            .arg(dir.join("wrapper.sh"))
            .env("PATH", path)
            .status()
            .unwrap();
        assert!(status.success());
        let calls = std::fs::read_to_string(&log).unwrap();
        let json_end = calls.find('}').unwrap() + 1;
        let report: serde_json::Value = serde_json::from_str(&calls[..json_end]).unwrap();
        assert_eq!(report["exit_code"], 3);
        let started = report["started_at_ms"].as_i64().expect("started_at_ms");
        let now = chrono::Utc::now().timestamp_millis();
        assert!(
            (now - 60_000..=now).contains(&started),
            "started_at_ms {started} is not the wrapper's start (now {now})"
        );
        let output = base64::engine::general_purpose::STANDARD
            .decode(report["output_base64"].as_str().unwrap())
            .unwrap();
        let output = String::from_utf8(output).unwrap();
        assert!(output.contains("Hello from Mimiry!"), "{output}");
        assert!(output.contains("quote\" and $HOME"), "{output}");
        assert!(calls.contains("Authorization: Bearer acc.tok"));
        assert!(calls.contains("shutdown -h now"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
