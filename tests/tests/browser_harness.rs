//! The browser harness (tests/src/browser.rs) tested on pages of its own, so that a green
//! dashboard walk means something: axe-core passes an accessible page and catches a page with
//! known serious faults, the keyboard helpers really drive a form, and the screenshots are real
//! PNGs of a rendered page at both widths.

use axum::extract::RawQuery;
use axum::response::Html;
use axum::routing::get;
use mimiry_tests::browser::{assert_no_serious_violations, png_facts, Browser, PHONE_WIDTH};
use std::collections::BTreeSet;

/// A page axe-core has nothing serious to say about: language, title, landmarks, labelled
/// fields, alt text, readable contrast.
const ACCESSIBLE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Accessible page</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font-family: sans-serif; margin: 0; color: #1a1a1a; background: #fff; }
  header { background: #123a6b; color: #fff; padding: 1rem 2rem; }
  main { padding: 2rem; max-width: 40rem; }
  .card { border: 1px solid #ccc; border-radius: 8px; padding: 1rem; margin-bottom: 1rem; }
  label { display: block; margin-top: .75rem; }
  button { margin-top: 1rem; background: #123a6b; color: #fff; border: 0; padding: .5rem 1rem; }
</style></head>
<body>
<header><p>Harness test</p></header>
<main>
  <h1>Create a thing</h1>
  <div class="card"><p>Balance: <strong>42.00</strong> credits</p>
    <img src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///ywAAAAAAQABAAACAUwAOw==" alt="A dot" width="16" height="16"></div>
  <form action="/echo" method="get">
    <label for="name">Name</label>
    <input id="name" name="name" type="text">
    <fieldset><legend>Scopes</legend>
      <label><input type="checkbox" name="scope" value="jobs:read"> jobs:read</label>
      <label><input type="checkbox" name="scope" value="jobs:write"> jobs:write</label>
    </fieldset>
    <button type="submit" id="create">Create</button>
  </form>
</main>
</body></html>"#;

/// A page with three faults axe-core rates serious or critical: an image without alt text, a
/// field without a label, and grey text on grey.
const BROKEN: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Broken page</title></head>
<body><main>
  <h1>Broken</h1>
  <img src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///ywAAAAAAQABAAACAUwAOw==" id="no-alt">
  <input id="unlabelled" type="text">
  <p id="faint" style="color:#bbbbbb;background:#cccccc">Hard to read</p>
</main></body></html>"#;

/// The accessible page made longer than any window, to tell a full-page shot from a window.
fn tall_page() -> String {
    ACCESSIBLE.replace(
        "</main>",
        "<div style=\"height:2500px\"></div><p>End of the page</p></main>",
    )
}

/// A page that reloads itself, as the dashboard's job page does while a job runs.
const RELOADING: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Reloading</title></head>
<body><main><h1>Reloading</h1>
<script>setTimeout(function () { location.reload(); }, 400);</script>
</main></body></html>"#;

/// Serves the fixture pages on a free loopback port; answers its base URL.
async fn serve() -> String {
    let app = axum::Router::new()
        .route("/accessible", get(|| async { Html(ACCESSIBLE) }))
        .route("/broken", get(|| async { Html(BROKEN) }))
        .route("/tall", get(|| async { Html(tall_page()) }))
        .route("/reloading", get(|| async { Html(RELOADING) }))
        // Echoes the submitted form, so the test sees what the keyboard really entered.
        .route(
            "/echo",
            get(|RawQuery(query): RawQuery| async move {
                Html(format!(
                    "<!doctype html><html lang=\"en\"><title>Echo</title><main><h1>Submitted</h1>\
                     <p id=\"query\">{}</p></main></html>",
                    query.unwrap_or_default().replace('<', "&lt;")
                ))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn axe_passes_a_clean_page_and_catches_serious_faults() {
    let base = serve().await;
    let browser = Browser::start(&base).await;

    browser.goto("/accessible").await;
    let clean = browser.check_page("harness-accessible").await;
    assert!(
        clean.iter().all(|v| !v.is_serious()),
        "the accessible fixture has serious findings: {clean:?}"
    );

    browser.goto("/broken").await;
    let found = browser.axe("harness-broken").await;
    let serious: BTreeSet<&str> = found
        .iter()
        .filter(|v| v.is_serious())
        .map(|v| v.id.as_str())
        .collect();
    for rule in ["image-alt", "label", "color-contrast"] {
        assert!(
            serious.contains(rule),
            "axe missed `{rule}` on the broken fixture; it found {found:?}"
        );
    }
    let alt = found.iter().find(|v| v.id == "image-alt").unwrap();
    assert_eq!(alt.targets, ["#no-alt"], "axe names the offending element");
    // The assertion the walk relies on fails on this page, and says what and where.
    let failure = std::panic::catch_unwind(|| assert_no_serious_violations("broken", &found))
        .expect_err("the assertion must fail on serious violations");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    for part in [
        "image-alt (critical)",
        "#no-alt",
        "color-contrast (serious)",
        "#faint",
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    browser.close().await;
}

#[tokio::test]
async fn keyboard_alone_fills_and_submits_a_form() {
    use fantoccini::key::Key;
    let base = serve().await;
    let browser = Browser::start(&base).await;
    browser.goto("/accessible").await;

    browser.tab_to("#name", 10).await;
    browser.press("my key").await;
    browser.tab_to("input[value=\"jobs:write\"]", 5).await;
    browser.press(" ").await;
    browser.tab_to("#create", 5).await;
    browser.press(&Key::Enter.to_string()).await;

    browser.wait_for_text("Submitted").await;
    assert_eq!(browser.path().await, "/echo?name=my+key&scope=jobs%3Awrite");
    assert_eq!(
        browser.text("#query").await,
        "name=my+key&scope=jobs%3Awrite"
    );
    // A Tab walk that cannot reach its target fails instead of looping.
    browser.goto("/broken").await;
    let stuck = tokio::spawn(async move {
        browser.tab_to("#does-not-exist", 3).await;
    })
    .await;
    assert!(stuck.is_err(), "tab_to must fail on an unreachable element");
}

#[tokio::test]
async fn screenshots_are_full_page_pngs_at_both_widths() {
    let base = serve().await;
    let browser = Browser::start(&base).await;
    browser.goto("/tall").await;
    let [laptop, phone] = browser.screenshots("harness-screenshot").await;

    let (width, height, varied) = png_facts(&laptop);
    assert_eq!(width, 1280, "{}", laptop.display());
    assert!(height >= 2500, "not the full page: {width}x{height}");
    assert!(varied, "{} is a single colour", laptop.display());
    assert!(std::fs::metadata(&laptop).unwrap().len() > 5_000);

    let (width, phone_height, varied) = png_facts(&phone);
    assert_eq!(width, PHONE_WIDTH, "{}", phone.display());
    assert!(varied, "{} is a single colour", phone.display());
    // Full page, not the window: the narrow layout wraps, so it is at least as tall.
    assert!(
        phone_height >= height,
        "phone {phone_height}px shorter than laptop {height}px"
    );
    browser.close().await;
}

#[tokio::test]
async fn stop_timers_holds_a_self_reloading_page_still() {
    let base = serve().await;
    let browser = Browser::start(&base).await;
    let origin = "return performance.timeOrigin;";
    let loaded = |v: serde_json::Value| v.as_f64().expect("timeOrigin");

    // Left alone, the page reloads (a new document, a new time origin)...
    browser.goto("/reloading").await;
    let first = loaded(browser.client().execute(origin, vec![]).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let later = loaded(browser.client().execute(origin, vec![]).await.unwrap());
    assert_ne!(first, later, "the fixture did not reload itself");

    // ...and held still, it does not.
    browser.stop_timers().await;
    let held = loaded(browser.client().execute(origin, vec![]).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let after = loaded(browser.client().execute(origin, vec![]).await.unwrap());
    assert_eq!(held, after, "the page reloaded after stop_timers");
    browser.close().await;
}
