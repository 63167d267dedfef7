//! SSH keys over HTTP (user guide §6 and §12): `POST /ssh-keys`, `GET /ssh-keys`,
//! `DELETE /ssh-keys/{id}`, with real keys made by `ssh-keygen`, checked against what the fake
//! provider holds (`GET /admin/state` → `ssh_keys`) and what `ssh-keygen -l` says of each key.
//!
//! The fake's key list is global to a stack and the tests of this binary run in parallel, so
//! checks on the shared stack look keys up by id or by content, never by count; the tests that
//! inject provider faults or count keys run on a stack of their own.

use mimiry_shared::auth::Scope;
use mimiry_tests::{call, record_secret, send, Answer, Stack, StackOptions};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const NOT_FOUND: &str = "SSH key not found";

// ---------------------------------------------------------------------------------------------
// Keys made by ssh-keygen.

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("mimiry-ssh-keys-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A key pair as `ssh-keygen` wrote it, and what `ssh-keygen -l` says of its public half.
struct KeyPair {
    /// The `.pub` line, without its newline.
    public: String,
    /// The private key file.
    private: String,
    /// `SHA256:...`
    fingerprint: String,
    bits: u64,
}

fn ssh_keygen(dir: &Path, name: &str, args: &[&str]) -> KeyPair {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", &format!("{name}@example.com"), "-f"])
        .arg(&path)
        .args(args)
        .status()
        .expect("ssh-keygen is installed");
    assert!(status.success(), "ssh-keygen {args:?}");
    let public = std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim_end()
        .to_string();
    let private = std::fs::read_to_string(&path).unwrap();
    let listed = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(path.with_extension("pub"))
        .output()
        .unwrap();
    assert!(listed.status.success());
    // "256 SHA256:abc... comment (ED25519)"
    let listed = String::from_utf8(listed.stdout).unwrap();
    let mut words = listed.split_whitespace();
    let bits = words.next().unwrap().parse().unwrap();
    let fingerprint = words.next().unwrap().to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{listed}");
    // The key material of the private key must never reach a log: the log audit checks.
    for line in private_material(&private) {
        record_secret(line);
    }
    KeyPair {
        public,
        private,
        fingerprint,
        bits,
    }
}

fn ed25519(dir: &Path, name: &str) -> KeyPair {
    ssh_keygen(dir, name, &["-t", "ed25519"])
}

/// The base64 lines of a PEM-armoured private key after the first (which is largely a fixed
/// header in OpenSSH's format).
fn private_material(private: &str) -> impl Iterator<Item = &str> {
    private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .skip(1)
        .filter(|l| l.len() >= 16)
}

// ---------------------------------------------------------------------------------------------
// The API and the fake.

async fn add(stack: &Stack, key: &str, name: &str, public_key: &str) -> Answer {
    let body = json!({ "name": name, "public_key": public_key });
    call("POST", &stack.url("/ssh-keys"), Some(key), Some(&body)).await
}

/// POST with a raw body and headers of our choosing.
async fn post_raw(
    stack: &Stack,
    key: &str,
    content_type: Option<&str>,
    body: &str,
    idempotency: Option<&str>,
) -> Answer {
    let mut request = reqwest::Client::new()
        .post(stack.url("/ssh-keys"))
        .header("Authorization", format!("Bearer {key}"))
        .body(body.to_string());
    if let Some(ct) = content_type {
        request = request.header("Content-Type", ct);
    }
    if let Some(k) = idempotency {
        request = request.header("Idempotency-Key", k);
    }
    send(request).await
}

async fn list(stack: &Stack, key: &str) -> Vec<Value> {
    let answer = call("GET", &stack.url("/ssh-keys"), Some(key), None).await;
    assert_eq!(answer.status, 200, "GET /ssh-keys: {answer:?}");
    answer.body["ssh_keys"]
        .as_array()
        .unwrap_or_else(|| panic!("{{\"ssh_keys\": [...]}}: {}", answer.body))
        .clone()
}

async fn delete(stack: &Stack, key: &str, id: &str) -> Answer {
    call(
        "DELETE",
        &stack.url(&format!("/ssh-keys/{id}")),
        Some(key),
        None,
    )
    .await
}

/// The keys the fake provider holds: `[{id, name, key, created_at}]`.
async fn fake_keys(stack: &Stack) -> Vec<Value> {
    stack.fake_admin(reqwest::Method::GET, "/state", None).await["ssh_keys"]
        .as_array()
        .unwrap()
        .clone()
}

async fn fake_key(stack: &Stack, id: &str) -> Option<Value> {
    fake_keys(stack).await.into_iter().find(|k| k["id"] == id)
}

/// How many keys at the fake have exactly this public key.
async fn fake_copies(stack: &Stack, public_key: &str) -> usize {
    fake_keys(stack)
        .await
        .iter()
        .filter(|k| k["key"] == public_key.trim())
        .count()
}

async fn provider_requests(stack: &Stack, route: &str) -> u64 {
    stack.fake_admin(reqwest::Method::GET, "/state", None).await["requests"]["by_route"][route]
        .as_u64()
        .unwrap_or(0)
}

fn assert_bad_request(answer: &Answer, field: &str, what: &str) {
    assert_eq!(answer.status, 400, "{what}: {answer:?}");
    assert_eq!(
        answer.body["code"], "validation_error",
        "{what}: {answer:?}"
    );
    assert_eq!(answer.body["details"]["field"], field, "{what}: {answer:?}");
    assert!(
        answer.error().contains(field),
        "{what}: the message names `{field}`: {}",
        answer.error()
    );
}

/// A 201 for `pair` named `name`, checked against the fake and `ssh-keygen -l`; returns the id.
async fn assert_added(stack: &Stack, answer: &Answer, name: &str, pair: &KeyPair) -> String {
    assert_eq!(answer.status, 201, "{name}: {answer:?}");
    let id = answer.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: an id: {}", answer.body));
    uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{name}: id {id:?} is a UUID: {e}"));
    assert_eq!(answer.body["name"], name);
    let datacrunch_id = answer.body["datacrunch_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: datacrunch_id: {}", answer.body));
    let at_fake = fake_key(stack, datacrunch_id)
        .await
        .unwrap_or_else(|| panic!("{name}: the fake holds key {datacrunch_id}"));
    assert_eq!(
        at_fake["key"],
        pair.public.as_str(),
        "{name}: the fake holds the same public key"
    );
    // At the provider the name also carries our id, so a key whose creation answer was lost
    // can be found again: "<name> (mimiry-<id>)".
    let id = answer.body["id"].as_str().unwrap_or_default();
    assert_eq!(
        at_fake["name"],
        format!("{name} (mimiry-{id})").as_str(),
        "{name}: under the user's name and our id"
    );
    if let Some(fp) = answer.body.get("fingerprint") {
        assert_eq!(
            fp,
            pair.fingerprint.as_str(),
            "{name}: the fingerprint ssh-keygen -l prints"
        );
    }
    if let Some(bits) = answer.body.get("bits") {
        assert_eq!(
            bits.as_u64(),
            Some(pair.bits),
            "{name}: the size ssh-keygen -l prints"
        );
    }
    id.to_string()
}

// ---------------------------------------------------------------------------------------------
// The happy path, user guide §6.

#[tokio::test]
async fn add_list_and_delete_a_key_as_the_guide_shows() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let dir = TempDir::new();
    let pair = ed25519(&dir.0, "laptop");
    assert!(
        list(stack, &account.key).await.is_empty(),
        "a new account has no keys"
    );

    // `cat ~/.ssh/id_ed25519.pub` output pasted as is, newline included.
    let answer = add(
        stack,
        &account.key,
        "my-laptop-key",
        &format!("{}\n", pair.public),
    )
    .await;
    let id = assert_added(stack, &answer, "my-laptop-key", &pair).await;
    let datacrunch_id = answer.body["datacrunch_id"].as_str().unwrap().to_string();

    let keys = list(stack, &account.key).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["id"], id.as_str());
    assert_eq!(keys[0]["name"], "my-laptop-key");
    assert_eq!(keys[0]["datacrunch_id"], datacrunch_id.as_str());
    assert_eq!(
        keys[0]["fingerprint"],
        pair.fingerprint.as_str(),
        "what ssh-keygen -l prints"
    );
    assert_eq!(keys[0]["algorithm"], "ssh-ed25519");
    assert_eq!(keys[0]["bits"].as_u64(), Some(pair.bits));
    assert_eq!(keys[0]["public_key"], pair.public.as_str());

    let answer = delete(stack, &account.key, &id).await;
    assert!(
        answer.status == 200 || answer.status == 204,
        "DELETE: {answer:?}"
    );
    if answer.status == 200 {
        assert_eq!(answer.body["id"], id.as_str());
    }
    assert!(
        list(stack, &account.key).await.is_empty(),
        "no longer listed"
    );
    assert!(
        fake_key(stack, &datacrunch_id).await.is_none(),
        "gone from the provider too"
    );

    let again = delete(stack, &account.key, &id).await;
    assert_eq!(again.status, 404, "{again:?}");
    assert_eq!(again.error(), NOT_FOUND);
    for bogus in ["not-a-uuid", &uuid::Uuid::new_v4().to_string()] {
        let answer = delete(stack, &account.key, bogus).await;
        assert_eq!(answer.status, 404, "DELETE /ssh-keys/{bogus}: {answer:?}");
        assert_eq!(answer.error(), NOT_FOUND);
    }

    // Deleted, it can be added again.
    let answer = add(stack, &account.key, "my-laptop-key", &pair.public).await;
    assert_added(stack, &answer, "my-laptop-key", &pair).await;
}

#[tokio::test]
async fn every_supported_key_type_is_accepted_and_short_rsa_is_not() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let dir = TempDir::new();
    let kinds: [(&str, &[&str], &str); 6] = [
        ("ed25519", &["-t", "ed25519"], "ssh-ed25519"),
        ("rsa2048", &["-t", "rsa", "-b", "2048"], "ssh-rsa"),
        ("rsa4096", &["-t", "rsa", "-b", "4096"], "ssh-rsa"),
        (
            "ecdsa256",
            &["-t", "ecdsa", "-b", "256"],
            "ecdsa-sha2-nistp256",
        ),
        (
            "ecdsa384",
            &["-t", "ecdsa", "-b", "384"],
            "ecdsa-sha2-nistp384",
        ),
        (
            "ecdsa521",
            &["-t", "ecdsa", "-b", "521"],
            "ecdsa-sha2-nistp521",
        ),
    ];
    let mut ids = Vec::new();
    for (name, args, algorithm) in kinds {
        let pair = ssh_keygen(&dir.0, name, args);
        let answer = add(stack, &account.key, name, &pair.public).await;
        let id = assert_added(stack, &answer, name, &pair).await;
        let listed = list(stack, &account.key).await;
        let item = listed.iter().find(|k| k["id"] == id.as_str()).unwrap();
        assert_eq!(item["algorithm"], algorithm, "{name}");
        assert_eq!(item["fingerprint"], pair.fingerprint.as_str(), "{name}");
        assert_eq!(item["bits"].as_u64(), Some(pair.bits), "{name}");
        ids.push(id);
    }
    assert_eq!(list(stack, &account.key).await.len(), kinds.len());

    let weak = ssh_keygen(&dir.0, "rsa1024", &["-t", "rsa", "-b", "1024"]);
    let answer = add(stack, &account.key, "old-key", &weak.public).await;
    assert_bad_request(&answer, "public_key", "RSA 1024");
    assert!(
        answer.error().contains("1024") && answer.error().contains("2048"),
        "{}",
        answer.error()
    );
    assert_eq!(
        fake_copies(stack, &weak.public).await,
        0,
        "not registered at the provider"
    );
    assert_eq!(
        list(stack, &account.key).await.len(),
        kinds.len(),
        "not stored"
    );
}

#[tokio::test]
async fn a_private_key_pasted_by_mistake_is_refused_and_never_echoed() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let dir = TempDir::new();
    let openssh = ed25519(&dir.0, "ed");
    let rsa_pem = ssh_keygen(&dir.0, "rsapem", &["-t", "rsa", "-b", "2048", "-m", "PEM"]);
    let ecdsa_pkcs8 = ssh_keygen(
        &dir.0,
        "ecpkcs8",
        &["-t", "ecdsa", "-b", "256", "-m", "PKCS8"],
    );
    assert!(rsa_pem.private.contains("BEGIN RSA PRIVATE KEY"));
    assert!(ecdsa_pkcs8.private.contains("BEGIN PRIVATE KEY"));
    let body_only: String = openssh
        .private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n");
    let cases = [
        ("OpenSSH private key", openssh.private.clone(), &openssh),
        (
            "OpenSSH private key without its armour lines",
            body_only,
            &openssh,
        ),
        ("RSA PEM private key", rsa_pem.private.clone(), &rsa_pem),
        (
            "PKCS#8 private key",
            ecdsa_pkcs8.private.clone(),
            &ecdsa_pkcs8,
        ),
    ];
    for (what, pasted, pair) in cases {
        let answer = add(stack, &account.key, "oops", &pasted).await;
        assert_bad_request(&answer, "public_key", what);
        assert!(
            answer.error().contains("private key"),
            "{what}: the message says so: {}",
            answer.error()
        );
        let text = answer.body.to_string();
        for line in pair.private.lines().filter(|l| l.len() >= 16) {
            for chunk in line.as_bytes().chunks(16).filter(|c| c.len() == 16) {
                let chunk = std::str::from_utf8(chunk).unwrap();
                assert!(
                    !text.contains(chunk),
                    "{what}: the response echoes key material: {text}"
                );
            }
        }
        assert!(
            !fake_keys(stack).await.iter().any(|k| k["key"]
                .as_str()
                .is_some_and(|s| s.contains(pasted.lines().nth(1).unwrap_or("-")))),
            "{what}: nothing reached the provider"
        );
    }
    assert!(list(stack, &account.key).await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn malformed_keys_and_bodies_are_400_naming_the_field() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let dir = TempDir::new();
    let pair = ed25519(&dir.0, "good");
    let rsa = ssh_keygen(&dir.0, "rsa", &["-t", "rsa", "-b", "2048"]);
    let ecdsa = ssh_keygen(&dir.0, "ec", &["-t", "ecdsa", "-b", "256"]);
    let data = pair.public.split_whitespace().nth(1).unwrap();
    let rsa_data = rsa.public.split_whitespace().nth(1).unwrap();
    let ec_data = ecdsa.public.split_whitespace().nth(1).unwrap();
    // One byte of the ECDSA point flipped: off the curve.
    let flipped_ec = {
        let mut bytes = decode_base64(ec_data);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        format!("ecdsa-sha2-nistp256 {}", encode_base64(&bytes))
    };
    let bad_keys = [
        ("empty", String::new()),
        ("blank", "   ".to_string()),
        ("type only", "ssh-ed25519".to_string()),
        ("not base64", "ssh-ed25519 !!!!not-base64!!!!".to_string()),
        (
            "truncated",
            format!("ssh-ed25519 {}", &data[..data.len() / 2]),
        ),
        ("type mismatch", format!("ssh-rsa {data}")),
        ("unknown type", format!("ssh-foo {data}")),
        ("dsa", format!("ssh-dss {rsa_data}")),
        ("two keys", format!("{}\n{}", pair.public, rsa.public)),
        (
            "authorized_keys options",
            format!("from=\"10.0.0.1\" {}", pair.public),
        ),
        ("ecdsa point off the curve", flipped_ec),
        ("random words", "hello world".to_string()),
    ];
    for (what, public_key) in &bad_keys {
        let answer = add(stack, &account.key, "bad", public_key).await;
        assert_bad_request(&answer, "public_key", what);
        if !public_key.trim().is_empty() {
            assert_eq!(
                fake_copies(stack, public_key).await,
                0,
                "{what}: not at the provider"
            );
        }
    }

    let long_name = "n".repeat(65);
    let bodies = [
        (
            "empty name",
            json!({ "name": "", "public_key": pair.public }),
            "name",
        ),
        (
            "blank name",
            json!({ "name": "   ", "public_key": pair.public }),
            "name",
        ),
        (
            "name too long",
            json!({ "name": long_name, "public_key": pair.public }),
            "name",
        ),
        (
            "control character in name",
            json!({ "name": "a\u{7}b", "public_key": pair.public }),
            "name",
        ),
        (
            "name not a string",
            json!({ "name": 5, "public_key": pair.public }),
            "name",
        ),
        (
            "public_key not a string",
            json!({ "name": "k", "public_key": ["x"] }),
            "public_key",
        ),
        ("missing name", json!({ "public_key": pair.public }), "name"),
        ("missing public_key", json!({ "name": "k" }), "public_key"),
        (
            "unknown field",
            json!({ "name": "k", "public_key": pair.public, "comment": "x" }),
            "comment",
        ),
        (
            "old field name",
            json!({ "name": "k", "key": pair.public }),
            "key",
        ),
    ];
    for (what, body, field) in &bodies {
        let answer = call(
            "POST",
            &stack.url("/ssh-keys"),
            Some(&account.key),
            Some(body),
        )
        .await;
        assert_bad_request(&answer, field, what);
    }

    for (what, raw) in [
        ("truncated JSON", r#"{"name": "k", "public_key": "#),
        ("not JSON", "name=k&public_key=x"),
        ("empty body", ""),
        ("trailing garbage", r#"{"name": "k", "public_key": "x"} {"#),
    ] {
        let answer = post_raw(stack, &account.key, Some("application/json"), raw, None).await;
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        assert_eq!(answer.body["code"], "malformed_json", "{what}: {answer:?}");
    }
    let answer = post_raw(
        stack,
        &account.key,
        Some("application/json"),
        "[1, 2]",
        None,
    )
    .await;
    assert_eq!(answer.status, 400, "a JSON array: {answer:?}");

    // User guide §12: "Forgetting the Content-Type header".
    let good_body = json!({ "name": "k", "public_key": pair.public }).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let answer = post_raw(stack, &account.key, content_type, &good_body, None).await;
        assert_eq!(
            answer.status, 415,
            "Content-Type {content_type:?}: {answer:?}"
        );
        assert_eq!(answer.body["code"], "unsupported_media_type");
        assert!(
            answer.error().contains("Content-Type") && answer.error().contains("application/json"),
            "the message says what to send: {}",
            answer.error()
        );
    }
    assert_eq!(
        fake_copies(stack, &pair.public).await,
        0,
        "no refused request reached the provider"
    );
    assert!(list(stack, &account.key).await.is_empty(), "nothing stored");

    // The same body with a proper Content-Type (parameters allowed) is fine.
    let answer = post_raw(
        stack,
        &account.key,
        Some("application/json; charset=utf-8"),
        &good_body,
        None,
    )
    .await;
    assert_added(stack, &answer, "k", &pair).await;
}

#[tokio::test]
async fn accounts_do_not_see_each_others_keys() {
    let stack = Stack::shared();
    let alice = stack.account("0").await;
    let bob = stack.account("0").await;
    let dir = TempDir::new();
    let pair = ed25519(&dir.0, "shared");

    let answer = add(stack, &alice.key, "alice", &pair.public).await;
    let alice_id = assert_added(stack, &answer, "alice", &pair).await;
    let alice_dc = answer.body["datacrunch_id"].as_str().unwrap().to_string();

    assert!(
        list(stack, &bob.key).await.is_empty(),
        "bob sees none of alice's keys"
    );
    let answer = delete(stack, &bob.key, &alice_id).await;
    assert_eq!(
        answer.status, 404,
        "bob cannot delete alice's key: {answer:?}"
    );
    assert_eq!(answer.error(), NOT_FOUND);
    assert_eq!(list(stack, &alice.key).await.len(), 1, "still alice's");
    assert!(
        fake_key(stack, &alice_dc).await.is_some(),
        "still at the provider"
    );

    // The same key twice in one account: 409 (also under another name or comment).
    let answer = add(stack, &alice.key, "alice-again", &pair.public).await;
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(answer.body["code"], "ssh_key_exists");
    assert!(
        answer.error().contains(&pair.fingerprint),
        "names the fingerprint: {}",
        answer.error()
    );
    let recommented = format!(
        "{} {}",
        pair.public.rsplit_once(' ').unwrap().0,
        "other-comment"
    );
    assert_eq!(
        add(stack, &alice.key, "alice-3", &recommented).await.status,
        409
    );
    assert_eq!(list(stack, &alice.key).await.len(), 1);
    assert_eq!(
        fake_copies(stack, &pair.public).await,
        1,
        "one copy at the provider"
    );

    // The same key in another account: fine, and a separate provider key.
    let answer = add(stack, &bob.key, "bob", &pair.public).await;
    let bob_id = assert_added(stack, &answer, "bob", &pair).await;
    assert_ne!(bob_id, alice_id);
    assert_ne!(answer.body["datacrunch_id"], alice_dc.as_str());
    assert_eq!(fake_copies(stack, &pair.public).await, 2);

    // Deleting bob's leaves alice's.
    assert_eq!(delete(stack, &bob.key, &bob_id).await.status, 200);
    assert!(list(stack, &bob.key).await.is_empty());
    assert_eq!(list(stack, &alice.key).await.len(), 1);
    assert!(fake_key(stack, &alice_dc).await.is_some());
}

#[tokio::test]
async fn ssh_key_routes_need_their_scopes_and_a_key() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let dir = TempDir::new();
    let pair = ed25519(&dir.0, "scoped");
    let read_only = stack.key(&account.account_id, &[Scope::SshKeysRead]).await;
    let write_only = stack.key(&account.account_id, &[Scope::SshKeysWrite]).await;
    let others: Vec<Scope> = Scope::ALL
        .into_iter()
        .filter(|s| !matches!(s, Scope::SshKeysRead | Scope::SshKeysWrite))
        .collect();
    let neither = stack.key(&account.account_id, &others).await;

    let answer = add(stack, &read_only, "k", &pair.public).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.error(), "Insufficient scope");
    assert_eq!(answer.body["details"]["required_scope"], "ssh_keys:write");
    assert_eq!(fake_copies(stack, &pair.public).await, 0);

    let answer = add(stack, &write_only, "k", &pair.public).await;
    let id = assert_added(stack, &answer, "k", &pair).await;

    let answer = call("GET", &stack.url("/ssh-keys"), Some(&write_only), None).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.body["details"]["required_scope"], "ssh_keys:read");
    assert_eq!(
        list(stack, &read_only).await.len(),
        1,
        "ssh_keys:read lists it"
    );

    let answer = delete(stack, &read_only, &id).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.body["details"]["required_scope"], "ssh_keys:write");
    for (method, path) in [
        ("GET", "/ssh-keys"),
        ("POST", "/ssh-keys"),
        ("DELETE", &format!("/ssh-keys/{id}")),
    ] {
        let answer = call(method, &stack.url(path), Some(&neither), None).await;
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
        assert_eq!(answer.error(), "Insufficient scope");
        let answer =
            send(reqwest::Client::new().request(method.parse().unwrap(), stack.url(path))).await;
        assert_eq!(
            answer.status, 401,
            "{method} {path} without a key: {answer:?}"
        );
        assert_eq!(answer.error(), "Invalid or missing API key");
    }
    assert_eq!(
        list(stack, &account.key).await.len(),
        1,
        "still there after the refused delete"
    );
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let dir = TempDir::new();
    let pair = ed25519(&dir.0, "idem");
    let body = json!({ "name": "ci-key", "public_key": pair.public }).to_string();
    let idem = format!("idem-{}", uuid::Uuid::new_v4());

    let first = post_raw(
        stack,
        &account.key,
        Some("application/json"),
        &body,
        Some(&idem),
    )
    .await;
    let id = assert_added(stack, &first, "ci-key", &pair).await;
    let again = post_raw(
        stack,
        &account.key,
        Some("application/json"),
        &body,
        Some(&idem),
    )
    .await;
    assert_eq!(again.status, 201, "a replay: {again:?}");
    assert_eq!(again.body, first.body, "the same response");
    assert_eq!(again.body["id"], id.as_str());
    assert_eq!(
        fake_copies(stack, &pair.public).await,
        1,
        "one key at the provider"
    );
    assert_eq!(list(stack, &account.key).await.len(), 1);

    // The same Idempotency-Key with another body.
    let other = json!({ "name": "another-name", "public_key": pair.public }).to_string();
    let answer = post_raw(
        stack,
        &account.key,
        Some("application/json"),
        &other,
        Some(&idem),
    )
    .await;
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(answer.body["code"], "idempotency_key_reused");
    let other_pair = ed25519(&dir.0, "idem2");
    let other = json!({ "name": "ci-key", "public_key": other_pair.public }).to_string();
    let answer = post_raw(
        stack,
        &account.key,
        Some("application/json"),
        &other,
        Some(&idem),
    )
    .await;
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(
        fake_copies(stack, &other_pair.public).await,
        0,
        "the other key was not registered"
    );

    // Another Idempotency-Key with the same body is a new request: the key exists already.
    let answer = post_raw(
        stack,
        &account.key,
        Some("application/json"),
        &body,
        Some(&format!("other-{idem}")),
    )
    .await;
    assert_eq!(answer.status, 409, "{answer:?}");
    assert_eq!(answer.body["code"], "ssh_key_exists");

    // An Idempotency-Key is per account: another account's same key and body is its own request.
    let bob = stack.account("0").await;
    let answer = post_raw(
        stack,
        &bob.key,
        Some("application/json"),
        &body,
        Some(&idem),
    )
    .await;
    let bob_id = assert_added(stack, &answer, "ci-key", &pair).await;
    assert_ne!(bob_id, id);

    for bad in ["x".repeat(256), "has space".to_string()] {
        let answer = post_raw(
            stack,
            &account.key,
            Some("application/json"),
            &other,
            Some(&bad),
        )
        .await;
        assert_bad_request(&answer, "Idempotency-Key", "a malformed Idempotency-Key");
    }
    assert_eq!(list(stack, &account.key).await.len(), 1);
}

/// Identical requests racing, without an Idempotency-Key: one wins, the others are told the key
/// exists, and the losers' copies registered at the provider are taken back.
#[tokio::test]
async fn racing_identical_requests_leave_one_key() {
    // A stack of its own: moto's rollback of the losing transactions could otherwise touch
    // the items other tests write at the same moment (see below).
    let stack = &Stack::start(StackOptions {
        name: "ssh-keys-race".into(),
        ..Default::default()
    });
    let account = stack.account("0").await;
    let dir = TempDir::new();
    let pair = ed25519(&dir.0, "race");
    let body = json!({ "name": "race", "public_key": pair.public }).to_string();
    let post = || post_raw(stack, &account.key, Some("application/json"), &body, None);
    let (a, b, c) = tokio::join!(post(), post(), post());
    let answers = [&a, &b, &c];
    let statuses: Vec<u16> = answers.iter().map(|x| x.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{answers:?}"
    );
    let won: BTreeSet<String> = answers
        .iter()
        .filter(|x| x.status == 201)
        .map(|x| x.body["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!won.is_empty(), "one of them is added: {statuses:?}");
    for loser in answers.iter().filter(|x| x.status == 409) {
        assert_eq!(loser.body["code"], "ssh_key_exists", "{loser:?}");
    }
    assert_eq!(
        fake_copies(stack, &pair.public).await,
        won.len(),
        "the losers' provider copies were taken back"
    );
    let listed: BTreeSet<String> = list(stack, &account.key)
        .await
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    if listed != won {
        // moto's TransactWriteItems is not thread-safe: a cancelled transaction restores a
        // snapshot of the whole table taken when it started, which can wipe (or bring back)
        // the items of a concurrent one. DynamoDB does not; the rest cannot be judged here.
        println!("note: moto's store disagrees with the answers ({statuses:?}, listed {listed:?}); race inconclusive");
        return;
    }
    assert_eq!(won.len(), 1, "exactly one wins: {statuses:?}");
}

// ---------------------------------------------------------------------------------------------
// Provider failures, on a stack of their own.

#[tokio::test]
async fn provider_failures_leave_nothing_half_done() {
    let stack = Stack::start(StackOptions {
        name: "ssh-keys-faults".into(),
        ..Default::default()
    });
    let account = stack.account("0").await;
    let dir = TempDir::new();
    let pair = ed25519(&dir.0, "faulty");
    let keys_at_fake = fake_keys(&stack).await.len();

    // POST while the provider answers 503 on its key routes.
    let fault = |count: u64| json!({ "server_errors": { "count": count, "status": 503, "paths": ["/v1/sshkeys", "/v1/ssh-keys"] } });
    stack
        .fake_admin(reqwest::Method::POST, "/faults", Some(fault(1)))
        .await;
    let posts_before = provider_requests(&stack, "POST /v1/ssh-keys").await;
    let idem = format!("retry-{}", uuid::Uuid::new_v4());
    let body = json!({ "name": "k", "public_key": pair.public }).to_string();
    let answer = post_raw(
        &stack,
        &account.key,
        Some("application/json"),
        &body,
        Some(&idem),
    )
    .await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(answer.body["code"], "provider_unavailable");
    assert!(!answer.error().is_empty());
    assert_eq!(
        provider_requests(&stack, "POST /v1/ssh-keys").await - posts_before,
        1,
        "the provider was asked once"
    );
    assert!(
        list(&stack, &account.key).await.is_empty(),
        "nothing stored"
    );
    assert_eq!(
        fake_keys(&stack).await.len(),
        keys_at_fake,
        "nothing at the provider"
    );

    // The retry (same Idempotency-Key) goes through: the failure was not recorded as the answer.
    let answer = post_raw(
        &stack,
        &account.key,
        Some("application/json"),
        &body,
        Some(&idem),
    )
    .await;
    let id = assert_added(&stack, &answer, "k", &pair).await;
    let datacrunch_id = answer.body["datacrunch_id"].as_str().unwrap().to_string();
    assert_eq!(fake_keys(&stack).await.len(), keys_at_fake + 1);

    // DELETE while the provider fails (deletes are retried, so fail them all).
    stack
        .fake_admin(reqwest::Method::POST, "/faults", Some(fault(100)))
        .await;
    let answer = delete(&stack, &account.key, &id).await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(answer.body["code"], "provider_unavailable");
    let listed = list(&stack, &account.key).await;
    assert_eq!(listed.len(), 1, "still listed");
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(
        fake_key(&stack, &datacrunch_id).await.is_some(),
        "still at the provider"
    );

    stack
        .fake_admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!({ "server_errors": { "count": 0 } })),
        )
        .await;
    let answer = delete(&stack, &account.key, &id).await;
    assert_eq!(answer.status, 200, "the retry succeeds: {answer:?}");
    assert!(list(&stack, &account.key).await.is_empty());
    assert!(fake_key(&stack, &datacrunch_id).await.is_none());
    assert_eq!(fake_keys(&stack).await.len(), keys_at_fake);
}

/// A create the provider carried out but answered after the client timeout (3 s): the user gets
/// a 502 and retries, as the message tells them to. Nothing may be left at the provider that no
/// account owns. Today the first copy stays at the provider for good (nothing takes it back and
/// the reconciler sweeps instances and scripts only). Fixed: a failed create looks the key up by
/// the id in its provider-side name and deletes it.
#[tokio::test]
async fn a_create_the_provider_answers_too_late_leaves_no_orphan_key() {
    let stack = Stack::start(StackOptions {
        name: "ssh-keys-orphan".into(),
        ..Default::default()
    });
    let account = stack.account("0").await;
    let dir = TempDir::new();
    // A first key, so that the provider token is already there and the delay hits the create.
    let warm = ed25519(&dir.0, "warm");
    assert_eq!(
        add(&stack, &account.key, "warm", &warm.public).await.status,
        201
    );
    let pair = ed25519(&dir.0, "late");
    stack
        .fake_admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!({ "slow_ms": 3_500, "slow_count": 1 })),
        )
        .await;
    let answer = add(&stack, &account.key, "late", &pair.public).await;
    assert_eq!(answer.status, 502, "the client timed out: {answer:?}");
    assert_eq!(
        list(&stack, &account.key).await.len(),
        1,
        "nothing stored for the failed request"
    );
    let retry = add(&stack, &account.key, "late", &pair.public).await;
    assert_added(&stack, &retry, "late", &pair).await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        fake_copies(&stack, &pair.public).await,
        1,
        "one copy at the provider, the account's"
    );
}

fn decode_base64(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
