//! End-to-end harness: starts moto, the fake DataCrunch server and the local server on free
//! loopback ports, once per test binary, and drives the API over HTTP as a user with curl would.
//!
//! Child processes are started from one long-lived thread with `PR_SET_PDEATHSIG`, so they die
//! with the test binary even though statics are never dropped. Their logs go to
//! `target/test-logs/`, which the log audit (`tests/tests/zz_log_audit.rs`) greps afterwards.

pub mod browser;
pub mod stripe;
pub mod web;
pub mod webhook_receiver;

use mimiry_shared::auth::Scope;
use mimiry_shared::money::Micros;
use mimiry_shared::store::Store;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Where every process of the test stacks logs; also where issued keys are recorded for the
/// log audit.
pub fn log_dir() -> PathBuf {
    let dir = target_dir().join("test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns children from a thread that lives as long as the process, so that
/// `PR_SET_PDEATHSIG` (which fires when the spawning *thread* exits) only fires at exit.
pub(crate) fn spawn(mut command: Command) -> Child {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            for (mut command, reply) in rx {
                use std::os::unix::process::CommandExt;
                unsafe {
                    command.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                        Ok(())
                    });
                }
                let _ = reply.send(command.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    sender
        .lock()
        .unwrap()
        .send((std::mem::replace(&mut command, Command::new("true")), tx))
        .unwrap();
    rx.recv().unwrap().expect("spawning a child process")
}

fn log_file(name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir().join(format!("{name}.log")))
        .unwrap()
}

/// Waits for the `... listening on http://ADDR` line a server prints first.
fn read_listen_url(child: &mut Child, what: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("{what} did not print its address (got {line:?})"))
        .to_string();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    url
}

pub(crate) fn wait_for_tcp(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sender of the stacks' email notices.
pub const NOTICE_FROM: &str = "notices@mimiry.test";

/// Timers short enough for tests to watch whole job lifecycles in seconds.
pub const TEST_ENV: &[(&str, &str)] = &[
    ("PROVISIONING_POLL_SECONDS", "1"),
    ("RUNNING_POLL_SECONDS", "2"),
    ("RETRY_DELAY_SECONDS", "1"),
    ("PROVISIONING_TIMEOUT_SECONDS", "20"),
    ("RECONCILE_GRACE_SECONDS", "3"),
    ("EFFECT_LEASE_SECONDS", "20"),
    ("CATALOG_TTL_SECONDS", "2"),
    // Verified keys are reused this long (production: 30 s); a revoked key stops working
    // within it — see `call_until_refused`.
    ("API_KEY_CACHE_SECONDS", "2"),
    ("PROVIDER_TIMEOUT_MS", "3000"),
    // Webhook receivers in the tests listen on http://127.0.0.1 (never set in production), and
    // failed deliveries are retried within seconds.
    ("WEBHOOKS_ALLOW_LOOPBACK", "1"),
    ("WEBHOOK_RETRY_BASE_SECONDS", "1"),
    ("WEBHOOK_RETRY_MAX_SECONDS", "2"),
];

/// One running stack: moto + fake provider + local server.
pub struct Stack {
    pub base_url: String,
    pub moto_url: String,
    pub fake_url: String,
    /// The fake Lambda Cloud, when the stack's `PROVIDERS` enables `lambda` (root URL, without
    /// `/api/v1`).
    pub lambda_url: Option<String>,
    pub table: String,
    pub queue_url: String,
    children: Mutex<Vec<Child>>,
}

/// Options for a stack; tests that need other timers start their own.
#[derive(Clone)]
pub struct StackOptions {
    pub name: String,
    pub env: Vec<(String, String)>,
    pub provision_ms: u64,
    pub execute: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            name: "e2e".into(),
            env: TEST_ENV
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            provision_ms: 1000,
            execute: true,
        }
    }
}

impl Stack {
    /// The shared stack of this test binary.
    pub fn shared() -> &'static Stack {
        static STACK: OnceLock<Stack> = OnceLock::new();
        STACK.get_or_init(|| Stack::start(StackOptions::default()))
    }

    pub fn start(options: StackOptions) -> Stack {
        let root = workspace_root();
        let tag = format!("{}-{}", options.name, std::process::id());
        let moto_port = free_port();
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run infra/setup.sh",
            python.display()
        );
        // moto with DynamoDB requests serialised: see infra/moto_server.py.
        let mut moto = Command::new(python);
        moto.arg(root.join("infra/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .stdout(log_file(&format!("moto-{tag}")))
            .stderr(log_file(&format!("moto-{tag}")));
        let mut children = vec![spawn(moto)];
        wait_for_tcp(moto_port, "moto");
        let moto_url = format!("http://127.0.0.1:{moto_port}");

        let mut fake = Command::new(bin("fake-datacrunch"));
        // Conformance in report mode: what the client sends outside the provider's OpenAPI
        // document is logged (`conformance:`) and counted in `/admin/state`, not refused.
        // Rate limits off: the suites' fast timers poll far above the real limits; a test that
        // wants them turns them on with `POST /admin/rate-limits`.
        fake.args([
            "--addr",
            "127.0.0.1:0",
            "--provision-ms",
            &options.provision_ms.to_string(),
            "--conformance",
            "report",
            "--no-rate-limits",
        ])
        .stdout(Stdio::piped())
        .stderr(log_file(&format!("fake-datacrunch-{tag}")));
        if options.execute {
            let dir = target_dir().join("test-instances").join(&tag);
            std::fs::create_dir_all(&dir).unwrap();
            fake.arg("--execute").arg(dir);
        }
        let mut fake = spawn(fake);
        let fake_url = read_listen_url(&mut fake, "fake-datacrunch");
        children.push(fake);

        // The second provider runs when the stack's environment enables it (`PROVIDERS`), so
        // the existing suites keep their DataCrunch-only stack.
        let lambda_url = options
            .env
            .iter()
            .any(|(k, v)| k == "PROVIDERS" && v.split(',').any(|p| p.trim() == "lambda"))
            .then(|| {
                let mut lambda = Command::new(bin("fake-lambda"));
                lambda
                    .args([
                        "--addr",
                        "127.0.0.1:0",
                        "--provision-ms",
                        &options.provision_ms.to_string(),
                        "--no-rate-limits",
                    ])
                    .stdout(Stdio::piped())
                    .stderr(log_file(&format!("fake-lambda-{tag}")));
                if options.execute {
                    let dir = target_dir().join("test-lambda-instances").join(&tag);
                    std::fs::create_dir_all(&dir).unwrap();
                    lambda.arg("--execute").arg(dir);
                }
                let mut lambda = spawn(lambda);
                let url = read_listen_url(&mut lambda, "fake-lambda");
                children.push(lambda);
                url
            });

        let table = "mimiry".to_string();
        let aws_env = [
            ("AWS_ENDPOINT_URL", moto_url.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("TABLE_NAME", table.clone()),
            ("PROVIDER_BASE_URL", format!("{fake_url}/v1")),
            // Verified in moto's SES by bootstrap; moto keeps what is sent (`sent_emails`).
            ("NOTICE_FROM_EMAIL", NOTICE_FROM.into()),
        ];
        let out = Command::new(bin("mimiry-admin"))
            .arg("bootstrap")
            .current_dir(&root)
            .envs(aws_env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let queue_url = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_string();

        let local_port = free_port();
        let mut local = Command::new(bin("mimiry-local"));
        local
            .args([
                "--addr",
                &format!("127.0.0.1:{local_port}"),
                "--reconcile-every",
                "2",
            ])
            .current_dir(&root)
            .envs(aws_env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("JOBS_QUEUE_URL", &queue_url)
            .env("PUBLIC_BASE_URL", format!("http://127.0.0.1:{local_port}"))
            .envs(
                lambda_url
                    .iter()
                    .map(|u| ("LAMBDA_CLOUD_BASE_URL", format!("{u}/api/v1"))),
            )
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(log_file(&format!("mimiry-local-{tag}")));
        let mut local = spawn(local);
        let base_url = read_listen_url(&mut local, "mimiry-local");
        children.push(local);

        Stack {
            base_url,
            moto_url,
            fake_url,
            lambda_url,
            table,
            queue_url,
            children: Mutex::new(children),
        }
    }

    /// A DynamoDB store on this stack's moto, for test setup (accounts, keys, credits) and for
    /// checking invariants. Built per call: SDK clients belong to the runtime that made them.
    pub async fn store(&self) -> Store {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.moto_url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .load()
            .await;
        Store::new(aws_sdk_dynamodb::Client::new(&config), self.table.clone())
    }

    /// The emails sent through this stack's SES, oldest first: moto keeps them and lists them
    /// (`source`, `destinations.ToAddresses`, `subject`, `body`) in its `/moto-api/data.json`.
    pub async fn sent_emails(&self) -> Vec<serde_json::Value> {
        let data: serde_json::Value = reqwest::get(format!("{}/moto-api/data.json", self.moto_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        data["ses"]["Message"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A new account with `credits` and a key holding every scope.
    pub async fn account(&self, credits: &str) -> TestAccount {
        let store = self.store().await;
        let account = store.create_account("test account").await.unwrap();
        if credits != "0" {
            store
                .add_credits(
                    &account.account_id,
                    Micros::parse_decimal(credits).unwrap(),
                    "test credits",
                )
                .await
                .unwrap();
        }
        let key = self.key(&account.account_id, &Scope::ALL).await;
        TestAccount {
            account_id: account.account_id,
            key,
        }
    }

    /// A key for `account_id` with exactly `scopes`; recorded for the log audit.
    pub async fn key(&self, account_id: &str, scopes: &[Scope]) -> String {
        let (key, _) = self
            .store()
            .await
            .create_key(account_id, "test key", scopes.to_vec())
            .await
            .unwrap();
        record_secret(key.expose());
        key.expose().to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Calls the fake provider's admin API (fault injection, state).
    pub async fn fake_admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let client = reqwest::Client::new();
        let mut request = client.request(method, format!("{}/admin{}", self.fake_url, path));
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.unwrap();
        response.json().await.unwrap_or(Value::Null)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in self.children.lock().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Appends a secret that must never appear in a log to the audit list.
pub fn record_secret(secret: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir().join("issued-secrets.txt"))
        .unwrap();
    writeln!(f, "{secret}").unwrap();
}

pub struct TestAccount {
    pub account_id: String,
    pub key: String,
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

/// `curl -X METHOD URL -H "Authorization: Bearer KEY" [-H "Content-Type: application/json" -d BODY]`
/// The stack's API key cache (`API_KEY_CACHE_SECONDS` above).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);

/// `GET url` with a key that was just revoked, repeated until it is refused: a warm function
/// may reuse the verified key for `KEY_CACHE_TTL`, never longer. Returns the last answer, which
/// the caller checks is the 401 — after one more second, a 200 is a failure.
pub async fn call_until_refused(url: &str, key: &str) -> Answer {
    let deadline = Instant::now() + KEY_CACHE_TTL + Duration::from_secs(1);
    loop {
        let answer = call("GET", url, Some(key), None).await;
        if answer.status != 200 || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn call(method: &str, url: &str, key: Option<&str>, body: Option<&Value>) -> Answer {
    let mut request = reqwest::Client::new().request(method.parse().unwrap(), url);
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    send(request).await
}

pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request failed");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        body,
        headers,
    }
}

/// A fresh ed25519 public key from `ssh-keygen`, as a user would paste it (guide §5).
pub fn ssh_public_key() -> String {
    let dir = std::env::temp_dir().join(format!("mimiry-test-key-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "test@mimiry.example",
            "-f",
        ])
        .arg(&path)
        .output()
        .expect("ssh-keygen must be installed");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    let _ = std::fs::remove_dir_all(&dir);
    public
}

/// Registers a new key through `POST /ssh-keys` (guide §6) and answers its id.
pub async fn add_ssh_key(stack: &Stack, api_key: &str) -> String {
    let body = serde_json::json!({ "name": "my-laptop-key", "public_key": ssh_public_key() });
    let answer = call("POST", &stack.url("/ssh-keys"), Some(api_key), Some(&body)).await;
    assert_eq!(answer.status, 201, "POST /ssh-keys: {answer:?}");
    answer.body["id"]
        .as_str()
        .expect("the key's id")
        .to_string()
}
