//! The script the instance really runs: the user's script, then a report of its exit code and
//! the tail of its output to `POST /jobs/{id}/report`, then — with `auto_shutdown` — a shutdown.
//! While the script runs, a shipper in the background sends its output to
//! `POST /jobs/{id}/logs` (the live log, shared/src/jobs/logs.rs): the script writes to a file
//! and never waits for the network.
//!
//! The user's script travels base64-encoded so no content of it can break out of the wrapper.

use super::logs::{CHUNK_BYTES, SHIP_INTERVAL_SECS};
use base64::Engine;

/// Bytes of output kept for the report.
pub const OUTPUT_TAIL_BYTES: usize = 4096;

pub struct WrapperInput<'a> {
    pub job_id: &'a str,
    pub user_script: &'a str,
    pub report_url: &'a str,
    pub report_token: &'a str,
    pub auto_shutdown: bool,
    /// The job has `env` or `secrets`: fetch them at boot from `…/jobs/{id}/env` (issue 15).
    /// Without, no request is made.
    pub fetch_env: bool,
    /// The retry-policy attempt (1-based), exported to the script as `MIMIRY_ATTEMPT`: each
    /// attempt gets its own script (issue 15).
    pub attempt: u32,
}

/// The env route is the report route's sibling too: `…/jobs/{id}/env`.
fn env_url(report_url: &str) -> String {
    let base = report_url.strip_suffix("/report").unwrap_or(report_url);
    format!("{base}/env")
}

/// The boot-time fetch of the job's variables: `NAME BASE64` lines cut out of the answer's
/// `lines` string and exported; values are decoded with a sentinel so trailing line breaks
/// survive `$(…)`. If it cannot be fetched (a secret was deleted, the API stayed down), the
/// script does not run without them: exit code 125 and a line saying why.
fn fetch_env_block(report_url: &str, token: &str) -> String {
    format!(
        r#"# The job's env and secrets, fetched at boot with the job token (never in this script).
env_ok=0
for attempt in 1 2 3 4 5 6; do
  if curl -fsS --max-time 15 '{url}' -H 'Authorization: Bearer {token}' -o "$dir/env.json" 2>>"$out"; then
    env_ok=1; break
  fi
  sleep $((attempt * 2))
done
if [ $env_ok = 1 ]; then
  sed -n 's/.*"lines": *"\([^"]*\)".*/\1/p' "$dir/env.json" | sed 's/\\n/\n/g' > "$dir/env.lines"
  while read -r name value; do
    [ -n "$name" ] || continue
    decoded=$(printf '%s' "$value" | base64 -d; printf x)
    export "$name=${{decoded%x}}"
  done < "$dir/env.lines"
  unset name value decoded
fi
rm -f "$dir/env.json" "$dir/env.lines"
"#,
        url = env_url(report_url),
        token = token,
    )
}

/// The logs route is the report route's sibling: `…/jobs/{id}/logs`.
fn logs_url(report_url: &str) -> String {
    let base = report_url.strip_suffix("/report").unwrap_or(report_url);
    format!("{base}/logs")
}

pub fn wrap(input: &WrapperInput) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(input.user_script.as_bytes());
    let shutdown = if input.auto_shutdown {
        "shutdown -h now || poweroff || true"
    } else {
        ": # auto_shutdown is off: the instance stays up until the job is cancelled"
    };
    let fetch_env = if input.fetch_env {
        fetch_env_block(input.report_url, input.report_token)
    } else {
        "env_ok=1\n".to_string()
    };
    format!(
        r#"#!/bin/bash
# Mimiry job {job_id}: runs your script, reports its exit code and output, then {after}.
set -u
dir=$(mktemp -d /tmp/mimiry-job.XXXXXX)
echo '{encoded}' | base64 -d > "$dir/script"
chmod +x "$dir/script"
cd "$dir"
out="$dir/output.log"
: > "$out"
# post FILE: POSTs a chunk, retried with backoff (about a minute in all); the answer in $dir/ship.out.
post() {{
  for attempt in 1 2 3 4 5; do
    if curl -fsS --max-time 10 -X POST '{logs_url}' \
        -H 'Authorization: Bearer {token}' \
        -H 'Content-Type: application/json' \
        --data-binary "@$1" -o "$dir/ship.out"; then
      return 0
    fi
    sleep $((attempt * attempt))
  done
  return 1
}}
# The shipper: every {interval} s (at once while a full chunk is waiting) the output not shipped
# yet, up to {chunk} bytes. A chunk that failed is sent again unchanged (same seq, same bytes)
# until it is stored.
ship_logs() {{
  local seq=0 off=0 pending=0 len=0 finishing=0 size partial
  while :; do
    [ -e "$dir/done" ] && finishing=1
    size=$(stat -c %s "$out")
    if [ $pending = 0 ] && [ "$size" -gt "$off" ]; then
      tail -c +$((off + 1)) "$out" | head -c {chunk} > "$dir/chunk"
      len=$(stat -c %s "$dir/chunk")
      # A chunk ends after a line break: the unfinished last line waits for the next chunk,
      # unless it is the end of the output, or one line fills the whole chunk.
      if [ -n "$(tail -c 1 "$dir/chunk")" ] && {{ [ $finishing = 0 ] || [ "$len" -ge {chunk} ]; }}; then
        partial=$(tail -n 1 "$dir/chunk" | wc -c)
        if [ "$partial" -lt "$len" ]; then
          len=$((len - partial))
        elif [ "$len" -lt {chunk} ]; then
          len=0
        fi
      fi
      if [ "$len" -gt 0 ]; then
        printf '{{"seq":%d,"data_base64":"%s"}}' "$seq" "$(head -c "$len" "$dir/chunk" | base64 -w0)" > "$dir/chunk.json"
        pending=1
      fi
    fi
    if [ $pending = 1 ]; then
      if post "$dir/chunk.json"; then
        pending=0; seq=$((seq + 1)); off=$((off + len))
        # At the cap the server keeps nothing more: stop shipping.
        grep -q '"truncated":true' "$dir/ship.out" 2>/dev/null && return 0
        if [ $finishing = 1 ] || [ $((size - off)) -ge {chunk} ]; then continue; fi
      elif [ $finishing = 1 ]; then
        return 1
      fi
    elif [ $finishing = 1 ]; then
      return 0
    fi
    # Wakes early when the script ends, so the report is not held up by a whole interval.
    for _ in $(seq $(({interval} * 4))); do [ -e "$dir/done" ] && break; sleep 0.25; done
  done
}}
{fetch_env}ship_logs > /dev/null 2>&1 &
shipper=$!
started=$(date +%s%3N)
if [ $env_ok = 1 ]; then
  MIMIRY_ATTEMPT={attempt} bash "$dir/script" >> "$out" 2>&1
  code=$?
else
  echo "[mimiry] could not fetch this job's env and secrets: the script did not run" >> "$out"
  code=125
fi
# The last chunks before the report: a finished job's log is complete.
touch "$dir/done"
wait $shipper
tail -c {tail} "$out" | base64 -w0 > "$dir/tail.b64"
printf '{{"exit_code":%d,"attempt":{attempt},"started_at_ms":%d,"output_base64":"%s"}}' "$code" "$started" "$(cat "$dir/tail.b64")" > "$dir/report.json"
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
        logs_url = logs_url(input.report_url),
        chunk = CHUNK_BYTES,
        interval = SHIP_INTERVAL_SECS,
        token = input.report_token,
        shutdown = shutdown,
        fetch_env = fetch_env,
        attempt = input.attempt,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Runs the wrapper of `user_script` with bash, with `curl` and `shutdown` replaced by
    /// recorders: report bodies go to `report.log`, log chunks to `logs.log` (one a line), every
    /// call to `calls.log`. The first log shipment fails, as a network error would.
    fn run_wrapper(user_script: &str) -> PathBuf {
        run_wrapper_with(user_script, false)
    }

    fn run_wrapper_with(user_script: &str, fetch_env: bool) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wrapper-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("bin/curl"),
            format!(
                r#"#!/bin/bash
echo " curl $*" >> {d}/calls.log
body=; for a in "$@"; do case "$a" in @*) body="${{a#@}}";; esac; done
case "$*" in
  */env*)
    printf '%s' '{{"job_id":"j1","lines":"GREETING aGVsbG8gd29ybGQK\nTOKEN cy0zY3IzdA==\n"}}' > "${{@: -1}}" ;;
  */logs*)
    if [ ! -e {d}/failed-once ]; then touch {d}/failed-once; exit 7; fi
    cat "$body" >> {d}/logs.log; echo >> {d}/logs.log ;;
  *) cat "$body" >> {d}/report.log ;;
esac
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("bin/shutdown"),
            format!("#!/bin/bash\necho shutdown $* >> {d}/calls.log\n"),
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
            user_script,
            report_url: "http://127.0.0.1:1/jobs/j1/report",
            report_token: "acc.tok",
            auto_shutdown: true,
            fetch_env,
            attempt: 1,
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
        dir
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap_or_default()
    }

    fn decode(b64: &str) -> String {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn wrapper_runs_the_script_and_reports_exit_code_and_output() {
        let dir = run_wrapper(
            "#!/bin/bash\necho \"Hello from Mimiry!\"\necho 'quote\" and $HOME'\nexit 3",
        );
        let report: serde_json::Value = serde_json::from_str(&read(&dir, "report.log")).unwrap();
        assert_eq!(report["exit_code"], 3);
        assert_eq!(report["attempt"], 1, "the report names its attempt");
        let started = report["started_at_ms"].as_i64().expect("started_at_ms");
        let now = chrono::Utc::now().timestamp_millis();
        assert!(
            (now - 60_000..=now).contains(&started),
            "started_at_ms {started} is not the wrapper's start (now {now})"
        );
        let output = decode(report["output_base64"].as_str().unwrap());
        assert!(output.contains("Hello from Mimiry!"), "{output}");
        assert!(output.contains("quote\" and $HOME"), "{output}");
        let calls = read(&dir, "calls.log");
        assert!(calls.contains("Authorization: Bearer acc.tok"));
        assert!(calls.contains("http://127.0.0.1:1/jobs/j1/logs"), "{calls}");
        assert!(calls.contains("shutdown -h now"));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// With `fetch_env`, the variables are fetched before the script and exported to it,
    /// values byte for byte (a trailing line break kept).
    #[test]
    fn wrapper_exports_the_fetched_env_to_the_script() {
        let dir = run_wrapper_with(
            "#!/bin/bash\nprintf '[%s][%s]' \"$GREETING\" \"$TOKEN\"",
            true,
        );
        let report: serde_json::Value = serde_json::from_str(&read(&dir, "report.log")).unwrap();
        let output = decode(report["output_base64"].as_str().unwrap());
        assert_eq!(output, "[hello world\n][s-3cr3t]");
        assert_eq!(report["exit_code"], 0);
        let calls = read(&dir, "calls.log");
        assert!(calls.contains("http://127.0.0.1:1/jobs/j1/env"), "{calls}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The log arrives in numbered chunks, whole lines while the script runs, the unfinished
    /// last line at the end, the failed chunk sent again under the same number, all of it
    /// before the report.
    #[test]
    fn wrapper_ships_the_output_in_ordered_chunks_before_the_report() {
        let dir = run_wrapper(
            "#!/bin/bash\nfor i in 1 2 3; do echo \"line $i\"; sleep 1; done\nprintf 'no newline'",
        );
        let chunks: Vec<serde_json::Value> = read(&dir, "logs.log")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(chunks.len() >= 2, "{chunks:?}");
        let seqs: Vec<u64> = chunks.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        let texts: Vec<String> = chunks
            .iter()
            .map(|c| decode(c["data_base64"].as_str().unwrap()))
            .collect();
        assert_eq!(texts.concat(), "line 1\nline 2\nline 3\nno newline");
        for t in &texts[..texts.len() - 1] {
            assert!(
                t.ends_with('\n'),
                "a chunk cut a line while running: {texts:?}"
            );
        }
        let calls = read(&dir, "calls.log");
        let first_log = calls.find("/jobs/j1/logs").unwrap();
        let report = calls.find("/jobs/j1/report").unwrap();
        assert!(first_log < report, "{calls}");
        assert!(calls.rfind("/jobs/j1/logs").unwrap() < report, "{calls}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
