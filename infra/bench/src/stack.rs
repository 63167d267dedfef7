//! The local stack the benchmarks run against, started the way `tests/src/lib.rs` starts it:
//! moto on a free port (with its request recorder), the fake DataCrunch server in execute mode,
//! `mimiry-admin bootstrap`, then `mimiry-local`. Plus the probes the benchmarks read: moto's
//! recording (which AWS calls were made), the fake's request counters and state, job items.

use crate::procs::{self, free_port, log_file, read_listen_url, wait_for_tcp};
use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where things are.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The workspace root (template.yaml, .venv).
    pub root: PathBuf,
    /// The release binaries under test (the functions and hello-lambda).
    pub release: PathBuf,
    /// `mimiry-local`, `mimiry-admin`, `fake-datacrunch`.
    pub stack_bin: PathBuf,
    /// `target/bench`: results, logs, moto's recording, instance work dirs.
    pub out: PathBuf,
}

impl Paths {
    pub fn logs(&self) -> PathBuf {
        self.out.join("logs")
    }
}

/// The user agent suffix of the bench's own SDK client: its calls are never counted.
pub const BENCH_APP: &str = "mimiry-bench";

/// Operations of the SQS event-source mapping (Lambda's poller in AWS, the local server's here):
/// not made by a request or by the worker, so not counted against them.
pub const ESM_OPS: &[&str] = &[
    "sqs:ReceiveMessage",
    "sqs:DeleteMessageBatch",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
];

pub struct Stack {
    pub paths: Paths,
    pub moto_url: String,
    pub fake_url: String,
    pub queue_url: String,
    pub local_url: String,
    local_port: u16,
    moto: Option<Child>,
    fake: Option<Child>,
    local: Option<Child>,
    pub http: reqwest::Client,
    pub db: aws_sdk_dynamodb::Client,
    pub account_id: String,
    pub key: String,
    pub table: String,
}

/// The local reconciler's period while the worker runs.
pub const RECONCILE_EVERY_SECS: u64 = 2;

/// How the fake provider runs instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeMode {
    /// Really runs each startup script (the job reports and ends).
    Execute,
    /// Instances boot and run on the fake's own schedule, nothing executes; large quotas.
    Scale,
}

/// One AWS call moto recorded.
#[derive(Debug, Clone)]
pub struct Call {
    /// `dynamodb:GetItem`, `sqs:SendMessage`, `secretsmanager:GetSecretValue`, …
    pub op: String,
    /// Made by the bench itself (probes), not by the code under test.
    pub bench: bool,
    /// The raw body, to tell which job a call was about.
    pub body: String,
    /// The app name in the caller's user agent (`app/…`), if any.
    pub app: Option<String>,
}

/// Request counts of the fake provider (`GET /admin/state` → `requests`).
#[derive(Debug, Clone, Default)]
pub struct ProviderCount {
    pub total: u64,
    pub by_route: BTreeMap<String, u64>,
}

impl ProviderCount {
    pub fn since(&self, before: &ProviderCount) -> ProviderCount {
        let mut by_route = BTreeMap::new();
        for (route, n) in &self.by_route {
            let d = n - before.by_route.get(route).copied().unwrap_or(0);
            if d > 0 {
                by_route.insert(route.clone(), d);
            }
        }
        ProviderCount {
            total: self.total - before.total,
            by_route,
        }
    }
}

impl Stack {
    pub async fn start(paths: Paths) -> Result<Stack> {
        Stack::start_with(paths, FakeMode::Execute).await
    }

    pub async fn start_with(paths: Paths, fake_mode: FakeMode) -> Result<Stack> {
        let logs = paths.logs();
        std::fs::create_dir_all(&logs)?;
        let recording = paths.out.join("moto-recording.jsonl");
        let _ = std::fs::remove_file(&recording);

        let moto_port = free_port()?;
        // As tests/src/lib.rs starts it: moto with DynamoDB requests serialised
        // (infra/moto_server.py), or plain moto_server where that wrapper does not exist.
        let python = paths.root.join(".venv/bin/python");
        let wrapper = paths.root.join("infra/moto_server.py");
        let mut moto = if wrapper.exists() {
            let mut c = Command::new(&python);
            c.arg(&wrapper);
            c
        } else {
            Command::new(paths.root.join(".venv/bin/moto_server"))
        };
        if !python.exists() {
            bail!("{} is missing: run `bash infra/setup.sh`", python.display());
        }
        moto.args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdout(log_file(&logs, "moto")?)
            .stderr(log_file(&logs, "moto")?);
        let (moto, _) = procs::spawn(moto, libc::SIGTERM).await?;
        let mut stack = Stack {
            moto_url: format!("http://127.0.0.1:{moto_port}"),
            fake_url: String::new(),
            queue_url: String::new(),
            local_url: String::new(),
            local_port: free_port()?,
            moto: Some(moto),
            fake: None,
            local: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            db: dynamodb_client(&format!("http://127.0.0.1:{moto_port}")).await?,
            account_id: String::new(),
            key: String::new(),
            table: "mimiry".into(),
            paths,
        };
        wait_for_tcp(moto_port, "moto", Duration::from_secs(60)).await?;

        let instances = stack.paths.out.join("instances");
        std::fs::create_dir_all(&instances)?;
        let mut fake = Command::new(stack.bin("fake-datacrunch")?);
        // Rate limits off: the throughput figures measure our side (batches of deploys far above
        // Verda's 60 per minute); requests per job-hour are counted, not throttled.
        fake.args([
            "--addr",
            "127.0.0.1:0",
            "--provision-ms",
            "3000",
            "--no-rate-limits",
        ]);
        match fake_mode {
            FakeMode::Execute => {
                fake.arg("--execute").arg(&instances);
            }
            // Instances boot on the fake's clock and run until deleted; the quotas are far above
            // Verda's (100 scripts, a few TB) so that 10,000 jobs fit in one project.
            FakeMode::Scale => {
                fake.args([
                    "--script-quota",
                    "1000000",
                    "--storage-quota-gb",
                    "1000000000",
                ]);
            }
        }
        fake.stdout(Stdio::piped())
            .stderr(log_file(&logs, "fake-datacrunch")?);
        let (mut fake, _) = procs::spawn(fake, libc::SIGTERM).await?;
        let url = read_listen_url(&mut fake, "fake-datacrunch");
        stack.fake = Some(fake);
        stack.fake_url = url?;

        let out = stack.admin(&["bootstrap"])?;
        stack.queue_url = out
            .lines()
            .last()
            .map(str::trim)
            .unwrap_or_default()
            .to_string();

        stack.account_id = last_line(&stack.admin(&["create-account", "--name", "bench"])?);
        stack.admin(&[
            "add-credits",
            "--account",
            &stack.account_id.clone(),
            "--amount",
            "1000000",
            "--note",
            "bench",
        ])?;
        stack.key = last_line(&stack.admin(&[
            "create-key",
            "--account",
            &stack.account_id.clone(),
            "--name",
            "bench",
            "--scopes",
            "all",
        ])?);
        if !stack.key.starts_with("mky_") {
            bail!("create-key did not print a key");
        }
        Ok(stack)
    }

    pub fn bin(&self, name: &str) -> Result<PathBuf> {
        let path = self.paths.stack_bin.join(name);
        if !path.exists() {
            bail!("{} is missing", path.display());
        }
        Ok(path)
    }

    /// What every process of ours needs to reach moto and the fake provider.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.moto_url.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("TABLE_NAME", self.table.clone()),
            ("PROVIDER_BASE_URL", format!("{}/v1", self.fake_url)),
            ("JOBS_QUEUE_URL", self.queue_url.clone()),
            ("PUBLIC_BASE_URL", self.public_base_url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The local server's address, also while it is being restarted (same port).
    pub fn public_base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.local_port)
    }

    fn admin(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.bin("mimiry-admin")?)
            .args(args)
            .current_dir(&self.paths.root)
            .envs(self.aws_env())
            .output()?;
        if !out.status.success() {
            bail!(
                "mimiry-admin {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// (Re)starts `mimiry-local` on the same port: API only, or with the worker (local SQS
    /// event-source mapping) and the reconciler timer.
    pub async fn start_local(&mut self, worker: bool, env: &[(&str, &str)]) -> Result<()> {
        self.stop_local();
        let mut cmd = Command::new(self.bin("mimiry-local")?);
        cmd.args(["--addr", &format!("127.0.0.1:{}", self.local_port)])
            .current_dir(&self.paths.root)
            .envs(self.aws_env())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log_file(&self.paths.logs(), "mimiry-local")?);
        if worker {
            // The reconciler watches parked jobs: it runs every few seconds here (once a
            // minute in AWS); its calls shared by all jobs are told apart in the counts.
            cmd.args(["--reconcile-every", &RECONCILE_EVERY_SECS.to_string()]);
        } else {
            cmd.arg("--no-worker");
        }
        let (mut child, _) = procs::spawn(cmd, libc::SIGTERM).await?;
        let url = read_listen_url(&mut child, "mimiry-local");
        self.local = Some(child);
        self.local_url = url?;
        Ok(())
    }

    pub fn stop_local(&mut self) {
        if let Some(mut child) = self.local.take() {
            procs::stop(&mut child, libc::SIGTERM, Duration::from_secs(5));
        }
    }

    pub fn shutdown(&mut self) {
        self.stop_local();
        for child in [self.fake.take(), self.moto.take()].into_iter().flatten() {
            let mut child = child;
            procs::stop(&mut child, libc::SIGTERM, Duration::from_secs(5));
        }
    }

    /// A request to the local server as a user with curl would make it.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method.parse()?, format!("{}{}", self.local_url, path))
            .header("Authorization", format!("Bearer {}", self.key));
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Submits a job; returns its id.
    pub async fn submit(&self, body: &Value) -> Result<String> {
        let (status, answer) = self.api("POST", "/jobs", Some(body)).await?;
        if status != 201 {
            bail!("POST /jobs: {status} {answer}");
        }
        answer["id"]
            .as_str()
            .or(answer["job_id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("POST /jobs answered no id: {answer}"))
    }

    pub async fn recorder(&self, action: &str) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/moto-api/recorder/{action}", self.moto_url))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("moto recorder {action}: {}", response.status());
        }
        Ok(response.text().await?)
    }

    /// Empties moto's recording and starts recording.
    pub async fn record(&self) -> Result<()> {
        self.recorder("reset-recording").await?;
        self.recorder("start-recording").await?;
        Ok(())
    }

    /// Stops recording and returns what was recorded.
    pub async fn recorded(&self) -> Result<Vec<Call>> {
        self.recorder("stop-recording").await?;
        let text = self.recorder("download-recording").await?;
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|entry| classify(&entry))
            .collect())
    }

    pub async fn fake_state(&self) -> Result<Value> {
        Ok(self
            .http
            .get(format!("{}/admin/state", self.fake_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn provider_count(&self) -> Result<ProviderCount> {
        let state = self.fake_state().await?;
        let requests = &state["requests"];
        Ok(ProviderCount {
            total: requests["total"].as_u64().unwrap_or(0),
            by_route: requests["by_route"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The job's item as stored (strongly consistent read).
    pub async fn job_item(&self, job_id: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        Ok(self
            .db
            .get_item()
            .table_name(&self.table)
            .key(
                "PK",
                AttributeValue::S(format!("ACCOUNT#{}", self.account_id)),
            )
            .key("SK", AttributeValue::S(format!("JOB#{job_id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| anyhow!(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?
            .item)
    }

    pub async fn job_status(&self, job_id: &str) -> Result<String> {
        let item = self
            .job_item(job_id)
            .await?
            .ok_or_else(|| anyhow!("job {job_id} not found"))?;
        Ok(item
            .get("status")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default())
    }

    /// Sends the worker the message the reconciler sends when it wakes a parked job (the
    /// bench's own call: not counted).
    pub async fn wake(&self, job_id: &str) -> Result<()> {
        let sqs = aws_sdk_sqs::Client::new(&bench_sdk_config(&self.moto_url).await?);
        let body = serde_json::json!({
            "account_id": self.account_id,
            "job_id": job_id,
            "look_now": true,
        });
        sqs.send_message()
            .queue_url(&self.queue_url)
            .message_body(body.to_string())
            .send()
            .await
            .map_err(|e| anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }

    /// Local-server counters (`/__local/stats`).
    async fn local_stats(&self) -> Result<Value> {
        Ok(self
            .http
            .get(format!("{}/__local/stats", self.local_url))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Messages handed to the worker so far.
    pub async fn worker_messages(&self) -> Result<u64> {
        Ok(self.local_stats().await?["messages"].as_u64().unwrap_or(0))
    }

    /// Runs of the local reconciler timer so far.
    pub async fn reconciler_runs(&self) -> Result<u64> {
        Ok(self.local_stats().await?["reconciler"]["runs"]
            .as_u64()
            .unwrap_or(0))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn last_line(text: &str) -> String {
    text.lines().last().unwrap_or_default().trim().to_string()
}

pub async fn dynamodb_client(endpoint: &str) -> Result<aws_sdk_dynamodb::Client> {
    Ok(aws_sdk_dynamodb::Client::new(
        &bench_sdk_config(endpoint).await?,
    ))
}

/// The bench's own SDK config: its calls carry `app/{BENCH_APP}` and are never counted.
async fn bench_sdk_config(endpoint: &str) -> Result<aws_config::SdkConfig> {
    Ok(aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .app_name(aws_config::AppName::new(BENCH_APP).context("app name")?)
        .load()
        .await)
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers.as_object()?.iter().find_map(|(k, v)| {
        if k.eq_ignore_ascii_case(name) {
            v.as_str()
        } else {
            None
        }
    })
}

/// Names a recorded request: the JSON protocols' `X-Amz-Target`, the query protocol's
/// `Action`; the service from the target prefix or the signing scope.
fn classify(entry: &Value) -> Call {
    let headers = &entry["headers"];
    let mut body = entry["body"].as_str().unwrap_or_default().to_string();
    if entry["body_encoded"].as_bool() == Some(true) {
        body = decode_base64(&body)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
    }
    let app = ["User-Agent", "X-Amz-User-Agent"]
        .iter()
        .filter_map(|h| header(headers, h))
        .find_map(|ua| {
            ua.split(' ')
                .find_map(|part| part.strip_prefix("app/"))
                .map(str::to_string)
        });
    let bench = app.as_deref() == Some(BENCH_APP);
    let op = match header(headers, "X-Amz-Target") {
        Some(target) => {
            let (prefix, action) = target.split_once('.').unwrap_or(("", target));
            let service = if prefix.starts_with("DynamoDB") {
                "dynamodb"
            } else if prefix.starts_with("AmazonSQS") {
                "sqs"
            } else if prefix.eq_ignore_ascii_case("secretsmanager") {
                "secretsmanager"
            } else {
                prefix
            };
            format!("{service}:{action}")
        }
        None => {
            let action = body
                .split('&')
                .find_map(|kv| kv.strip_prefix("Action="))
                .unwrap_or("unknown");
            let service = header(headers, "Authorization")
                .and_then(|a| a.split("Credential=").nth(1))
                .and_then(|c| c.split('/').nth(3))
                .unwrap_or("unknown");
            format!("{service}:{action}")
        }
    };
    Call {
        op,
        bench,
        body,
        app,
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The calls made by the code under test: not the bench's probes, not the event-source
/// mapping's polling.
pub fn counted(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| !c.bench && !ESM_OPS.contains(&c.op.as_str()))
        .collect()
}

/// `op × n` summary, most frequent first.
pub fn summarize<'a>(calls: impl IntoIterator<Item = &'a Call>) -> String {
    let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
    for c in calls {
        *by_op.entry(c.op.as_str()).or_default() += 1;
    }
    let mut v: Vec<_> = by_op.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(op, n)| format!("{op}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}
