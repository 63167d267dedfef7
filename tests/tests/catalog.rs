//! The catalog routes (`GET /instances`, `/availability`, `/locations`, `/images`,
//! `/providers`, user guide §4 and §8) over HTTP, as a user with curl would call them.
//!
//! Expectations come from the fake provider itself (`GET {fake}/v1/...` with a token of our
//! own), never from what the API answered. Tests that inject faults or count provider calls
//! run on stacks of their own, so they cannot disturb the tests sharing `Stack::shared()`.

use mimiry_shared::auth::Scope;
use mimiry_tests::{call, record_secret, send, Answer, Stack, StackOptions};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// `CATALOG_TTL_SECONDS` of the test stacks.
const TTL: Duration = Duration::from_secs(2);
const ROUTES: [&str; 5] = [
    "/instances",
    "/availability",
    "/locations",
    "/images",
    "/providers",
];
/// The provider paths behind the catalog (prefixes for `server_errors`).
const PROVIDER_CATALOG_PATHS: [&str; 4] = [
    "/v1/instance-types",
    "/v1/instance-availability",
    "/v1/locations",
    "/v1/images",
];
/// The fake's request-counter keys of those paths, plus the token endpoint.
const PROVIDER_CATALOG_ROUTES: [&str; 5] = [
    "GET /v1/instance-types",
    "GET /v1/instance-availability",
    "GET /v1/locations",
    "GET /v1/images",
    "POST /v1/oauth2/token",
];
const PROVIDER_UNAVAILABLE: &str =
    "The GPU provider is unavailable right now; please retry shortly";

// ---------------------------------------------------------------------------------------------
// The fake provider, asked directly.

/// A client of the fake's own API, authenticated like Mimiry is.
struct Fake {
    url: String,
    token: String,
}

impl Fake {
    async fn connect(stack: &Stack) -> Fake {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/oauth2/token", stack.fake_url))
            .json(&json!({
                "grant_type": "client_credentials",
                "client_id": "mimiry-local",
                "client_secret": "local-secret",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            200,
            "the fake refused the local credentials"
        );
        let body: Value = response.json().await.unwrap();
        let token = body["access_token"].as_str().expect("a token").to_string();
        // Never printed; recorded so the log audit checks that no process logged it either.
        record_secret(&token);
        Fake {
            url: stack.fake_url.clone(),
            token,
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = reqwest::Client::new()
            .get(format!("{}{}", self.url, path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "fake GET {path}");
        response.json().await.unwrap()
    }

    async fn instance_types(&self) -> Vec<Value> {
        self.get("/v1/instance-types?currency=usd")
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// location code → on-demand instance types, from `GET /v1/instance-availability`.
    async fn availability(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.get("/v1/instance-availability")
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (str_of(&l["location_code"]), strings(&l["availabilities"])))
            .collect()
    }

    async fn images(&self, instance_type: Option<&str>) -> Vec<Value> {
        let path = match instance_type {
            Some(t) => format!("/v1/images?instance_type={t}"),
            None => "/v1/images".to_string(),
        };
        self.get(&path).await.as_array().unwrap().clone()
    }
}

/// The fake's request counters (`GET /admin/state` → `requests`).
async fn provider_requests(stack: &Stack) -> Value {
    stack.fake_admin(reqwest::Method::GET, "/state", None).await["requests"].clone()
}

/// Provider requests made between two counter snapshots: all of them, and those on the catalog
/// paths and the token endpoint (the rest is the reconciler's background sweep).
fn provider_calls(before: &Value, after: &Value) -> (u64, u64) {
    let n = |v: &Value, route: &str| v["by_route"][route].as_u64().unwrap_or(0);
    let total = after["total"].as_u64().unwrap() - before["total"].as_u64().unwrap();
    let catalog = PROVIDER_CATALOG_ROUTES
        .iter()
        .map(|r| n(after, r) - n(before, r))
        .sum();
    (total, catalog)
}

/// Waits until the reconciler of a fresh stack has made its first provider calls (and so got
/// its own token), so that later counts are the catalog's alone.
async fn wait_for_background_sweep(stack: &Stack) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if provider_requests(stack).await["by_route"]["GET /v1/scripts"]
            .as_u64()
            .unwrap_or(0)
            >= 1
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("note: the reconciler made no provider call within 20 s");
}

async fn faults(stack: &Stack, patch: Value) {
    let answer = stack
        .fake_admin(reqwest::Method::POST, "/faults", Some(patch.clone()))
        .await;
    assert!(
        answer.is_object(),
        "the fake refused faults {patch}: {answer}"
    );
}

fn catalog_errors(status: u16) -> Value {
    json!({ "server_errors": { "count": 100_000, "status": status, "paths": PROVIDER_CATALOG_PATHS } })
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_string()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(str_of)
        .collect()
}

/// A plain decimal string (`"15.12"`) in millionths, parsed exactly; panics on anything else.
fn micros(s: &str) -> i64 {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    assert!(
        !whole.is_empty() && digits(whole),
        "not a plain decimal: {s:?}"
    );
    assert!(
        frac.len() <= 6 && digits(frac),
        "not a plain decimal with at most 6 places: {s:?}"
    );
    whole.parse::<i64>().unwrap() * 1_000_000 + format!("{frac:0<6}").parse::<i64>().unwrap()
}

/// Provider price × 1.10, rounded up to the millionth.
fn with_markup(provider_micros: i64) -> i64 {
    (provider_micros * 110 + 99) / 100
}

async fn get(stack: &Stack, key: &str, path: &str) -> Answer {
    call("GET", &stack.url(path), Some(key), None).await
}

async fn get_ok(stack: &Stack, key: &str, path: &str) -> Answer {
    let answer = get(stack, key, path).await;
    assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
    assert!(answer.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    answer
}

/// The listing under `name`, checking the envelope (`stale`, `as_of`) on the way.
fn items<'a>(answer: &'a Answer, name: &str) -> &'a Vec<Value> {
    assert!(
        answer.body["stale"].is_boolean(),
        "{name}: no stale flag: {}",
        answer.body
    );
    let as_of = str_of(&answer.body["as_of"]);
    chrono::DateTime::parse_from_rfc3339(&as_of)
        .unwrap_or_else(|e| panic!("{name}: as_of {as_of:?}: {e}"));
    answer.body[name]
        .as_array()
        .unwrap_or_else(|| panic!("no `{name}` array: {}", answer.body))
}

/// `availability` answer → location → types.
fn availability_map(answer: &Answer) -> BTreeMap<String, BTreeSet<String>> {
    items(answer, "availability")
        .iter()
        .map(|a| (str_of(&a["location"]), strings(&a["instance_types"])))
        .collect()
}

fn image_types(list: &[Value]) -> BTreeSet<String> {
    list.iter().map(|i| str_of(&i["image_type"])).collect()
}

/// A stale answer: 200, `stale: true`, the last good listing as of when it was fetched.
fn assert_stale(answer: &Answer, good: &Answer, path: &str) {
    assert_eq!(
        answer.status, 200,
        "{path} with the provider failing: {answer:?}"
    );
    assert_eq!(answer.body["stale"], true, "{path}: {}", answer.body);
    let name = path.trim_start_matches('/').split('?').next().unwrap();
    assert_eq!(
        items(answer, name),
        items(good, name),
        "{path}: the last good answer"
    );
    assert_eq!(
        answer.body["as_of"], good.body["as_of"],
        "{path}: as of when it was fetched"
    );
}

fn assert_provider_unavailable(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 502, "{what}: {answer:?}");
    assert_eq!(
        answer.body["code"], "provider_unavailable",
        "{what}: {answer:?}"
    );
    assert_eq!(answer.error(), PROVIDER_UNAVAILABLE, "{what}");
    let request_id = answer.headers["x-request-id"].to_str().unwrap();
    assert_eq!(answer.body["request_id"], request_id, "{what}");
}

fn assert_provider_busy(answer: &Answer, what: &str, retry_after: std::ops::RangeInclusive<u64>) {
    assert_eq!(answer.status, 503, "{what}: {answer:?}");
    assert_eq!(answer.body["code"], "provider_busy", "{what}: {answer:?}");
    let secs: u64 = answer
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After: {answer:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after.contains(&secs), "{what}: Retry-After {secs}");
}

// ---------------------------------------------------------------------------------------------
// Healthy provider, shared stack.

#[test]
fn markup_arithmetic_of_this_file_is_right() {
    assert_eq!(micros("0.89"), 890_000);
    assert_eq!(with_markup(micros("0.89")), 979_000);
    assert_eq!(with_markup(micros("15.12")), 16_632_000);
    assert_eq!(with_markup(micros("0.000001")), 2); // 1.1 rounded up
    assert_eq!(micros("34.76"), 34_760_000);
}

#[tokio::test]
async fn instances_are_the_providers_types_at_provider_price_times_1_10() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let fake = Fake::connect(stack).await;
    let provider_types = fake.instance_types().await;

    let answer = get_ok(stack, &account.key, "/instances").await;
    let listed = items(&answer, "instances");
    assert_eq!(answer.body["stale"], false);
    assert!(listed.len() >= 6, "at least 6 types: {}", listed.len());
    let names: BTreeSet<String> = listed.iter().map(|t| str_of(&t["instance_type"])).collect();
    assert_eq!(names.len(), listed.len(), "each type once");
    for wanted in ["1V100.6V", "8A100.80G"] {
        assert!(
            names.contains(wanted),
            "{wanted} (user guide §8) is listed: {names:?}"
        );
    }
    let provider_names: BTreeSet<String> = provider_types
        .iter()
        .map(|t| str_of(&t["instance_type"]))
        .collect();
    assert_eq!(names, provider_names, "exactly the provider's types");

    for p in &provider_types {
        let name = str_of(&p["instance_type"]);
        let t = listed
            .iter()
            .find(|t| t["instance_type"] == name.as_str())
            .unwrap();
        let price = t["price_per_hour"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: price_per_hour is a decimal string: {t}"));
        let provider_price = str_of(&p["price_per_hour"]);
        assert_eq!(
            micros(price),
            with_markup(micros(&provider_price)),
            "{name}: {price} is the provider's {provider_price} × 1.10"
        );
        assert_eq!(t["currency"], "USD", "{name}");
        assert_eq!(t["gpu"]["count"], p["gpu"]["number_of_gpus"], "{name}");
        assert_eq!(
            t["gpu"]["memory_gb"], p["gpu_memory"]["size_in_gigabytes"],
            "{name}"
        );
        assert_eq!(t["cpu"]["cores"], p["cpu"]["number_of_cores"], "{name}");
        assert_eq!(t["memory_gb"], p["memory"]["size_in_gigabytes"], "{name}");
        assert_eq!(t["description"], p["description"], "{name}");
        assert!(!str_of(&t["provider"]).is_empty(), "{name}");
    }
    // A value checked by hand against the fake's price list: 0.89 × 1.10.
    let v100 = listed
        .iter()
        .find(|t| t["instance_type"] == "1V100.6V")
        .unwrap();
    assert_eq!(micros(v100["price_per_hour"].as_str().unwrap()), 979_000);
}

#[tokio::test]
async fn availability_is_the_providers_and_filters_narrow_it() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let fake = Fake::connect(stack).await;
    let provider = fake.availability().await;
    assert!(
        provider.len() >= 2,
        "the fake has several locations: {provider:?}"
    );

    let all = get_ok(stack, &account.key, "/availability").await;
    assert_eq!(all.body["stale"], false);
    assert_eq!(
        availability_map(&all),
        provider,
        "without filters: the provider's on-demand availability"
    );

    // A type available in some locations but not in others (V100 is absent from ICE-01).
    for t in ["1V100.6V", "8H100.80S.176V"] {
        let has: BTreeSet<&String> = provider
            .iter()
            .filter(|(_, ts)| ts.contains(t))
            .map(|(l, _)| l)
            .collect();
        let lacks: BTreeSet<&String> = provider
            .iter()
            .filter(|(_, ts)| !ts.contains(t))
            .map(|(l, _)| l)
            .collect();
        assert!(
            !has.is_empty() && !lacks.is_empty(),
            "{t} is somewhere but not everywhere at the fake"
        );
        let answer = get_ok(
            stack,
            &account.key,
            &format!("/availability?instance_type={t}"),
        )
        .await;
        let listed = availability_map(&answer);
        for (location, types) in &listed {
            assert!(
                types.iter().all(|x| x == t),
                "?instance_type={t}: only {t} at {location}: {types:?}"
            );
        }
        let listed_has: BTreeSet<&String> = listed
            .iter()
            .filter(|(_, ts)| ts.contains(t))
            .map(|(l, _)| l)
            .collect();
        assert_eq!(
            listed_has, has,
            "{t} is listed exactly where the provider has it"
        );
        for location in &lacks {
            assert!(
                !listed.get(*location).is_some_and(|ts| ts.contains(t)),
                "{t} is absent at {location}"
            );
        }
    }

    for location in provider.keys() {
        let answer = get_ok(
            stack,
            &account.key,
            &format!("/availability?location={location}"),
        )
        .await;
        let listed = availability_map(&answer);
        assert_eq!(
            listed.keys().collect::<Vec<_>>(),
            vec![location],
            "?location={location}"
        );
        assert_eq!(
            &listed[location], &provider[location],
            "?location={location}"
        );
    }

    // Both filters: the type where it is, nothing where it is not.
    let ice_has_v100 = provider["ICE-01"].contains("1V100.6V");
    let fin_has_v100 = provider["FIN-01"].contains("1V100.6V");
    assert!(
        fin_has_v100 && !ice_has_v100,
        "the fake's V100 is in FIN-01, not in ICE-01"
    );
    let here = availability_map(
        &get_ok(
            stack,
            &account.key,
            "/availability?instance_type=1V100.6V&location=FIN-01",
        )
        .await,
    );
    assert_eq!(
        here.get("FIN-01"),
        Some(&BTreeSet::from(["1V100.6V".to_string()])),
        "{here:?}"
    );
    let there = availability_map(
        &get_ok(
            stack,
            &account.key,
            "/availability?instance_type=1V100.6V&location=ICE-01",
        )
        .await,
    );
    assert!(
        there.values().all(BTreeSet::is_empty),
        "no V100 in ICE-01: {there:?}"
    );
}

#[tokio::test]
async fn locations_are_the_providers() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let fake = Fake::connect(stack).await;
    let provider = fake.get("/v1/locations").await;

    let answer = get_ok(stack, &account.key, "/locations").await;
    assert_eq!(answer.body["stale"], false);
    let listed = items(&answer, "locations");
    let codes: BTreeSet<String> = listed.iter().map(|l| str_of(&l["code"])).collect();
    let expected: BTreeSet<String> = ["FIN-01", "FIN-02", "FIN-03", "ICE-01"]
        .map(String::from)
        .into();
    assert_eq!(codes, expected);
    let provider = provider.as_array().unwrap();
    assert_eq!(listed.len(), provider.len());
    for p in provider {
        let l = listed.iter().find(|l| l["code"] == p["code"]).unwrap();
        assert_eq!(l["name"], p["name"], "{p}");
        assert_eq!(l["country_code"], p["country_code"], "{p}");
    }
}

#[tokio::test]
async fn images_are_the_providers_and_narrow_by_instance_type() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let fake = Fake::connect(stack).await;

    let answer = get_ok(stack, &account.key, "/images").await;
    assert_eq!(answer.body["stale"], false);
    let all = items(&answer, "images").clone();
    let all_types = image_types(&all);
    assert!(
        all_types.contains("ubuntu-22.04-cuda-12.0"),
        "user guide §8's example image: {all_types:?}"
    );
    let provider_all = fake.images(None).await;
    assert_eq!(all_types, image_types(&provider_all));
    for p in &provider_all {
        let i = all
            .iter()
            .find(|i| i["image_type"] == p["image_type"])
            .unwrap();
        assert_eq!(i["id"], p["id"]);
        assert_eq!(i["name"], p["name"]);
        assert_eq!(i["is_default"], p["is_default"], "{p}");
    }

    for t in ["CPU.4V.16G", "1V100.6V", "1H100.80S.30V"] {
        let provider = fake.images(Some(t)).await;
        let answer = get_ok(stack, &account.key, &format!("/images?instance_type={t}")).await;
        let narrowed = items(&answer, "images");
        let types = image_types(narrowed);
        assert_eq!(types, image_types(&provider), "?instance_type={t}");
        assert!(
            !types.is_empty() && types.len() < all_types.len(),
            "?instance_type={t} narrows: {types:?}"
        );
        assert!(types.is_subset(&all_types));
        for p in &provider {
            let i = narrowed
                .iter()
                .find(|i| i["image_type"] == p["image_type"])
                .unwrap();
            assert_eq!(
                i["is_default"], p["is_default"],
                "?instance_type={t}: default of {p}"
            );
        }
    }
    // A CPU type has no CUDA image.
    let cpu = get_ok(stack, &account.key, "/images?instance_type=CPU.4V.16G").await;
    assert!(!image_types(items(&cpu, "images")).contains("ubuntu-22.04-cuda-12.0"));
}

#[tokio::test]
async fn providers_lists_the_one_provider_as_operational() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let answer = get_ok(stack, &account.key, "/providers").await;
    let providers = answer.body["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 1, "{}", answer.body);
    let instances = get_ok(stack, &account.key, "/instances").await;
    let provider_of_types = &items(&instances, "instances")[0]["provider"];
    assert_eq!(
        &providers[0]["id"], provider_of_types,
        "the provider the types come from"
    );
    assert!(!str_of(&providers[0]["name"]).is_empty());
    assert_eq!(providers[0]["status"], "operational", "the fake answers");
}

#[tokio::test]
async fn unknown_filter_values_and_parameters_are_400_naming_them() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let cases = [
        ("/availability?instance_type=9Z999.1G", "instance_type"),
        ("/availability?instance_type=", "instance_type"),
        ("/availability?location=MARS-01", "location"),
        ("/availability?location=fin-01", "location"),
        (
            "/availability?instance_type=1V100.6V&location=MARS-01",
            "location",
        ),
        ("/images?instance_type=9Z999.1G", "instance_type"),
        ("/instances?instance_type=1V100.6V", "instance_type"),
        ("/instances?foo=1", "foo"),
        ("/availability?instance_typ=1V100.6V", "instance_typ"),
        ("/availability?location=FIN-01&spot=true", "spot"),
        ("/locations?country=FI", "country"),
        ("/images?location=FIN-01", "location"),
        ("/providers?verbose=1", "verbose"),
    ];
    for (path, field) in cases {
        let answer = get(stack, &account.key, path).await;
        assert_eq!(answer.status, 400, "{path}: {answer:?}");
        assert_eq!(answer.body["code"], "validation_error", "{path}");
        assert_eq!(answer.body["details"]["field"], field, "{path}: {answer:?}");
        assert!(
            answer.error().contains(field),
            "{path}: the message names `{field}`: {}",
            answer.error()
        );
    }
}

#[tokio::test]
async fn catalog_needs_instances_read_and_a_key() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let others: Vec<Scope> = Scope::ALL
        .into_iter()
        .filter(|s| *s != Scope::InstancesRead)
        .collect();
    let without = stack.key(&account.account_id, &others).await;
    let only = stack
        .key(&account.account_id, &[Scope::InstancesRead])
        .await;
    for path in ROUTES {
        let answer = get(stack, &without, path).await;
        assert_eq!(
            answer.status, 403,
            "{path} without instances:read: {answer:?}"
        );
        assert_eq!(answer.error(), "Insufficient scope", "{path}");
        assert_eq!(
            answer.body["details"]["required_scope"], "instances:read",
            "{path}"
        );

        let answer = send(reqwest::Client::new().get(stack.url(path))).await;
        assert_eq!(answer.status, 401, "{path} without a key: {answer:?}");
        assert_eq!(answer.error(), "Invalid or missing API key", "{path}");

        let answer = get(stack, &only, path).await;
        assert_eq!(
            answer.status, 200,
            "{path} with instances:read alone: {answer:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Provider trouble and provider calls, on stacks of their own.

/// Warm cache: how many provider calls each request costs, then the provider failing (503s,
/// then answers slower than the client timeout) after the TTL: the last good answer, `stale`.
#[tokio::test]
async fn warm_cache_serves_stale_answers_when_the_provider_fails() {
    let stack = Stack::start(StackOptions {
        name: "catalog-warm".into(),
        ..Default::default()
    });
    let account = stack.account("0").await;
    let key = account.key.as_str();
    wait_for_background_sweep(&stack).await;
    let mut figures: Vec<String> = Vec::new();

    // Cold: nothing cached, no provider token yet.
    let before = provider_requests(&stack).await;
    let cold_started = Instant::now();
    let cold = get_ok(&stack, key, "/instances").await;
    let after = provider_requests(&stack).await;
    let (total, catalog) = provider_calls(&before, &after);
    figures.push(format!("GET /instances, cold (empty cache, no token): {catalog} provider calls (all requests at the fake: {total})"));
    assert_eq!(catalog, 2, "a token and the instance types");
    assert_eq!(
        after["by_route"]["GET /v1/instance-types"]
            .as_u64()
            .unwrap()
            - before["by_route"]["GET /v1/instance-types"]
                .as_u64()
                .unwrap_or(0),
        1
    );
    assert_eq!(cold.body["stale"], false);

    // Warm, within the TTL: nothing.
    let before = provider_requests(&stack).await;
    let warm = get_ok(&stack, key, "/instances").await;
    let after = provider_requests(&stack).await;
    let (total, catalog) = provider_calls(&before, &after);
    if cold_started.elapsed() < TTL {
        figures.push(format!(
            "GET /instances, warm (within the TTL): {catalog} provider calls (all: {total})"
        ));
        assert_eq!(catalog, 0, "served from the cache");
        assert_eq!(
            warm.body["as_of"], cold.body["as_of"],
            "the same cached answer"
        );
    } else {
        println!("note: the warm request came after the TTL on this slow machine; not counted");
    }

    // Cold for a route needing three lists (types are cached): locations + availability.
    let before = provider_requests(&stack).await;
    get_ok(
        &stack,
        key,
        "/availability?instance_type=1V100.6V&location=FIN-01",
    )
    .await;
    let after = provider_requests(&stack).await;
    let (total, catalog) = provider_calls(&before, &after);
    figures.push(format!(
        "GET /availability?instance_type=&location=, locations and availability cold: {catalog} provider calls (all: {total})"
    ));

    // Warm every answer the failure below should serve stale.
    let paths = [
        "/instances",
        "/availability",
        "/availability?instance_type=1V100.6V&location=FIN-01",
        "/locations",
        "/images",
        "/images?instance_type=1V100.6V",
    ];
    let mut good: BTreeMap<&str, Answer> = BTreeMap::new();
    for path in paths {
        good.insert(path, get_ok(&stack, key, path).await);
    }
    assert_eq!(
        get_ok(&stack, key, "/providers").await.body["providers"][0]["status"],
        "operational"
    );

    // After the TTL, a healthy provider is asked again: one call.
    tokio::time::sleep(TTL + Duration::from_millis(300)).await;
    let before = provider_requests(&stack).await;
    let refreshed = get_ok(&stack, key, "/instances").await;
    let after = provider_requests(&stack).await;
    let (total, catalog) = provider_calls(&before, &after);
    figures.push(format!(
        "GET /instances, after the TTL: {catalog} provider calls (all: {total})"
    ));
    assert_eq!(catalog, 1, "the expired list is fetched again");
    assert_eq!(refreshed.body["stale"], false);
    assert_ne!(refreshed.body["as_of"], cold.body["as_of"], "a new answer");
    good.insert("/instances", refreshed);

    // The provider answers 503 on its catalog paths; the TTL runs out.
    faults(&stack, catalog_errors(503)).await;
    tokio::time::sleep(TTL + Duration::from_millis(300)).await;
    let before = provider_requests(&stack).await;
    let stale = get(&stack, key, "/instances").await;
    let after = provider_requests(&stack).await;
    let (total, catalog) = provider_calls(&before, &after);
    figures.push(format!("GET /instances, provider answering 503, cache expired: {catalog} provider calls (all: {total})"));
    assert!(catalog >= 1, "the provider was asked before falling back");
    assert_stale(&stale, &good["/instances"], "/instances");
    for path in paths.into_iter().filter(|p| *p != "/instances") {
        assert_stale(&get(&stack, key, path).await, &good[path], path);
    }
    let providers = get_ok(&stack, key, "/providers").await;
    assert_eq!(
        providers.body["providers"][0]["status"], "degraded",
        "{}",
        providers.body
    );
    let injected = stack.fake_admin(reqwest::Method::GET, "/state", None).await;
    assert!(
        injected["faults"]["server_errors"]["count"]
            .as_u64()
            .unwrap()
            < 100_000,
        "the faults were hit"
    );

    // Answers slower than the client timeout (3 s) instead.
    faults(
        &stack,
        json!({ "server_errors": { "count": 0 }, "slow_ms": 3_500 }),
    )
    .await;
    let started = Instant::now();
    let before = provider_requests(&stack).await;
    let slow = get(&stack, key, "/locations").await;
    let after = provider_requests(&stack).await;
    let (total, catalog) = provider_calls(&before, &after);
    figures.push(format!(
        "GET /locations, provider slower than the timeout, cache expired: {catalog} provider calls (all: {total}), answered in {} ms",
        started.elapsed().as_millis()
    ));
    faults(&stack, json!({ "slow_ms": 0 })).await;
    assert_eq!(slow.status, 200, "{slow:?}");
    assert_eq!(slow.body["stale"], true, "{}", slow.body);
    assert_eq!(
        items(&slow, "locations"),
        items(&good["/locations"], "locations")
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the client waited for its timeout"
    );

    // The provider is back: fresh answers again.
    let back = get_ok(&stack, key, "/instances").await;
    assert_eq!(back.body["stale"], false, "{}", back.body);
    assert_eq!(
        get_ok(&stack, key, "/providers").await.body["providers"][0]["status"],
        "operational"
    );

    println!(
        "PROVIDER CALLS PER CATALOG REQUEST (fake's requests counters, catalog paths + token):"
    );
    for f in figures {
        println!("  {f}");
    }
}

/// Cold cache (a fresh stack): bad provider credentials, then 503s, then a provider slower than
/// the client timeout. Every catalog route answers a clear 502, never a 500; `/providers` says
/// the provider is unavailable.
#[tokio::test]
async fn cold_cache_with_the_provider_failing_is_a_clear_502() {
    let stack = Stack::start(StackOptions {
        name: "catalog-cold".into(),
        ..Default::default()
    });
    let account = stack.account("0").await;
    let key = account.key.as_str();
    wait_for_background_sweep(&stack).await;
    let mut figures: Vec<String> = Vec::new();

    // Bad credentials: the provider secret is rotated to a value the fake does not accept
    // before the catalog ever read it.
    let wrong = format!("wrong-secret-{}", uuid::Uuid::new_v4().simple());
    record_secret(&wrong);
    put_provider_secret(&stack, "mimiry-local", &wrong).await;
    let state_before = stack.fake_admin(reqwest::Method::GET, "/state", None).await;
    let answer = get(&stack, key, "/instances").await;
    let state_after = stack.fake_admin(reqwest::Method::GET, "/state", None).await;
    assert_provider_unavailable(&answer, "bad provider credentials");
    assert!(
        !answer.body.to_string().contains(&wrong),
        "the secret is not echoed"
    );
    let (total, catalog) = provider_calls(&state_before["requests"], &state_after["requests"]);
    figures.push(format!(
        "GET /instances, cold, bad provider credentials: {catalog} provider calls (all: {total})"
    ));
    let token_requests = |s: &Value| {
        s["requests"]["by_route"]["POST /v1/oauth2/token"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        token_requests(&state_after) > token_requests(&state_before),
        "a token was asked for"
    );
    assert_eq!(
        state_after["tokens_issued"], state_before["tokens_issued"],
        "and refused by the fake"
    );
    let providers = get_ok(&stack, key, "/providers").await;
    assert_eq!(
        providers.body["providers"][0]["status"], "unavailable",
        "{}",
        providers.body
    );

    // The secret is put back; now the provider's catalog answers 503.
    put_provider_secret(&stack, "mimiry-local", "local-secret").await;
    faults(&stack, catalog_errors(503)).await;
    let before = provider_requests(&stack).await;
    let answer = get(&stack, key, "/instances").await;
    let after = provider_requests(&stack).await;
    assert_provider_unavailable(&answer, "GET /instances, provider 503, cold");
    let (total, catalog) = provider_calls(&before, &after);
    figures.push(format!(
        "GET /instances, cold, provider answering 503: {catalog} provider calls (all: {total})"
    ));
    for path in [
        "/availability",
        "/availability?instance_type=1V100.6V",
        "/availability?location=FIN-01",
        "/locations",
        "/images",
        "/images?instance_type=1V100.6V",
    ] {
        let answer = get(&stack, key, path).await;
        assert_provider_unavailable(&answer, &format!("GET {path}, provider 503, cold"));
    }
    let providers = get_ok(&stack, key, "/providers").await;
    assert_eq!(
        providers.body["providers"][0]["status"], "unavailable",
        "{}",
        providers.body
    );

    // Other failure statuses are 502 too, never a 500.
    for status in [500, 502, 504] {
        faults(&stack, catalog_errors(status)).await;
        let answer = get(&stack, key, "/locations").await;
        assert_provider_unavailable(&answer, &format!("provider answering {status}"));
    }

    // The provider's rate limit is not an outage: 503 `provider_busy` with a Retry-After —
    // a bare 429 (the client waits 10 s for one that does not say how long), then the real
    // limiter's (every path refused for a 4 s window: longer than the client waits inline).
    faults(&stack, catalog_errors(429)).await;
    let answer = get(&stack, key, "/locations").await;
    assert_provider_busy(&answer, "provider answering a bare 429", 10..=10);
    faults(&stack, json!({ "server_errors": { "count": 0 } })).await;
    let limits = stack
        .fake_admin(
            reqwest::Method::POST,
            "/rate-limits",
            Some(json!({ "enabled": true, "endpoint": 0, "list": 0, "window_ms": 4_000 })),
        )
        .await;
    assert_eq!(limits["endpoint"], 0, "{limits}");
    let answer = get(&stack, key, "/images").await;
    assert_provider_busy(&answer, "provider rate limited (429)", 1..=4);
    stack
        .fake_admin(
            reqwest::Method::POST,
            "/rate-limits",
            Some(json!({ "enabled": false })),
        )
        .await;
    // The client remembers the pause: let it pass before the next case.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Slower than the client timeout.
    faults(
        &stack,
        json!({ "server_errors": { "count": 0 }, "slow_ms": 3_500 }),
    )
    .await;
    let started = Instant::now();
    let before = provider_requests(&stack).await;
    let answer = get(&stack, key, "/images").await;
    let after = provider_requests(&stack).await;
    faults(&stack, json!({ "slow_ms": 0 })).await;
    assert_provider_unavailable(
        &answer,
        "GET /images, provider slower than the timeout, cold",
    );
    let (total, catalog) = provider_calls(&before, &after);
    figures.push(format!(
        "GET /images, cold, provider slower than the timeout: {catalog} provider calls (all: {total}), answered in {} ms",
        started.elapsed().as_millis()
    ));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the client waited for its timeout"
    );

    // Recovery: the provider's answer, fresh.
    let fake = Fake::connect(&stack).await;
    let answer = get_ok(&stack, key, "/instances").await;
    assert_eq!(answer.body["stale"], false);
    let names: BTreeSet<String> = items(&answer, "instances")
        .iter()
        .map(|t| str_of(&t["instance_type"]))
        .collect();
    let provider: BTreeSet<String> = fake
        .instance_types()
        .await
        .iter()
        .map(|t| str_of(&t["instance_type"]))
        .collect();
    assert_eq!(names, provider);
    assert_eq!(
        get_ok(&stack, key, "/providers").await.body["providers"][0]["status"],
        "operational"
    );

    println!("PROVIDER CALLS PER CATALOG REQUEST, COLD CACHE WITH THE PROVIDER FAILING:");
    for f in figures {
        println!("  {f}");
    }
}

/// Rotates the provider secret in this stack's Secrets Manager (moto), as an operator would.
async fn put_provider_secret(stack: &Stack, client_id: &str, client_secret: &str) {
    let secret = json!({ "client_id": client_id, "client_secret": client_secret }).to_string();
    let response = reqwest::Client::new()
        .post(format!("{}/", stack.moto_url))
        .header("X-Amz-Target", "secretsmanager.PutSecretValue")
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=00",
        )
        .body(json!({ "SecretId": "mimiry/provider/datacrunch", "SecretString": secret }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "moto: {}",
        response.text().await.unwrap_or_default()
    );
}
