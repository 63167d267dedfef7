//! A real browser for the tests: Debian's headless Chromium driven over WebDriver by Debian's
//! chromedriver (the two packages are built together, so their versions always match), with
//! helpers for what a person does on a page (fill, click, type Tab/Enter/Space), full-page
//! screenshots at a laptop and a phone width into `target/screenshots/`, and axe-core
//! (`infra/browser/node_modules`, installed by `infra/setup.sh`) run inside each page.
//!
//! Every wait is bounded (`WAIT`); the browser only reaches loopback (see `CHROMIUM_ARGS`).
//! chromedriver runs in a process group of its own, with Chromium inside it: dropping the
//! `Browser` ends that group by its id, so no browser outlives its test even when it panics.

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The longest any single wait for the page may take.
pub const WAIT: Duration = Duration::from_secs(15);
/// The two widths every page is photographed at: a laptop and a phone (CSS pixels).
pub const LAPTOP_WIDTH: u32 = 1280;
pub const PHONE_WIDTH: u32 = 390;
/// A full-page screenshot is cut at this height; a page longer than that is a finding anyway.
const MAX_SHOT_HEIGHT: u32 = 8000;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Headless as CI runs it (root, no /dev/shm to speak of), and nothing leaves the machine:
/// Chromium's own background traffic is off, every non-loopback request goes to a proxy port
/// where nothing listens (loopback is always direct), and no host name resolves.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--window-size=1280,900",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--disable-breakpad",
    "--disable-crash-reporter",
];

/// One axe-core finding: a rule, how bad, and the elements it hit (CSS selectors).
#[derive(Debug, Clone, Deserialize)]
pub struct Violation {
    pub id: String,
    /// `minor`, `moderate`, `serious` or `critical` (axe can leave it unset).
    pub impact: Option<String>,
    pub help: String,
    pub targets: Vec<String>,
}

impl Violation {
    pub fn is_serious(&self) -> bool {
        matches!(self.impact.as_deref(), Some("serious" | "critical"))
    }
}

/// What a page cost to load, from the browser's own Navigation/Resource Timing: bytes of the
/// HTML document, of its stylesheets and of its scripts (as sent, from cache or not), and the
/// server's time to first byte for the document (one sample).
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize)]
pub struct PageWeight {
    pub html: u64,
    pub css: u64,
    pub js: u64,
    pub other: u64,
    pub ttfb_ms: f64,
}

impl PageWeight {
    pub fn total(&self) -> u64 {
        self.html + self.css + self.js + self.other
    }
}

/// Fails on `serious` or `critical` axe findings, naming each rule, its impact and the elements.
pub fn assert_no_serious_violations(page: &str, violations: &[Violation]) {
    let serious: Vec<String> = violations
        .iter()
        .filter(|v| v.is_serious())
        .map(|v| {
            format!(
                "  {} ({}): {} at {}",
                v.id,
                v.impact.as_deref().unwrap_or("?"),
                v.help,
                v.targets.join(", ")
            )
        })
        .collect();
    assert!(
        serious.is_empty(),
        "axe-core: {} serious/critical violation(s) on page `{page}`:\n{}",
        serious.len(),
        serious.join("\n")
    );
}

/// The width and height of a PNG file, read by a real decoder (which also checks its CRCs),
/// and whether it has more than one colour (a blank page is one colour).
pub fn png_facts(path: &std::path::Path) -> (u32, u32, bool) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut pixels = vec![0; reader.output_buffer_size().expect("PNG too large")];
    let frame = reader
        .next_frame(&mut pixels)
        .unwrap_or_else(|e| panic!("{}: broken PNG data: {e}", path.display()));
    let pixels = &pixels[..frame.buffer_size()];
    let step = frame.color_type.samples() * usize::from(frame.bit_depth as u8).div_ceil(8);
    let first = &pixels[..step];
    let varied = pixels.chunks_exact(step).any(|p| p != first);
    (frame.width, frame.height, varied)
}

pub fn screenshot_dir() -> PathBuf {
    let dir = crate::target_dir().join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn axe_source() -> String {
    let path = crate::workspace_root().join("infra/browser/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run infra/setup.sh (npm ci in infra/browser)",
            path.display()
        )
    })
}

/// Chrome's DevTools protocol through chromedriver (`goog/cdp/execute`): what WebDriver has no
/// command for, here the page size for a phone and screenshots beyond the viewport.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// A headless Chromium session; see the module comment.
pub struct Browser {
    client: Client,
    base_url: String,
    /// When the session opened: page lines say how far into the walk they are.
    opened: Instant,
    _driver: Driver,
}

/// chromedriver's process group (it and its Chromium), ended by the group's id when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is the driver's PID (`process_group(0)` at spawn).
        let group = self.0.id() as libc::pid_t;
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session; relative paths given to
    /// `goto` are joined to `base_url`.
    pub async fn start(base_url: &str) -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: run infra/setup.sh (Debian's chromium and chromium-driver)"
            );
        }
        let port = crate::free_port();
        // Not in the stacks' log directory: the browser's transcript holds what the page showed
        // (a new API key, by design), and the log audit is about the system's logs. Warnings
        // only: at INFO every command is logged, axe-core's 650 kB source included.
        let logs = crate::target_dir().join("browser-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("chromedriver-{port}.log"));
        let mut command = Command::new(CHROMEDRIVER);
        command
            .args([
                format!("--port={port}"),
                "--allowed-ips=127.0.0.1".to_string(),
                format!("--log-path={}", log.display()),
                "--log-level=WARNING".to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, which Chromium joins: the group's id is the driver's PID.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        // Owned from here on, so that a failed start still ends the group.
        let driver = Driver(crate::spawn(command));
        crate::wait_for_tcp(port, "chromedriver");
        let browser = Browser {
            client: connect(port).await,
            base_url: base_url.trim_end_matches('/').to_string(),
            opened: Instant::now(),
            _driver: driver,
        };
        browser.set_width(LAPTOP_WIDTH).await;
        browser
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base_url)
        }
    }

    /// Opens a page (a path under the base URL, or a full loopback URL) and waits for its load.
    pub async fn goto(&self, path_or_url: &str) {
        let url = self.url(path_or_url);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The path (and query) of the page now shown.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Waits until an element matching `css` is on the page.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.wait_for_within(css, WAIT).await
    }

    /// As `wait_for`, with another limit (a job's lifecycle, watched on a self-reloading page).
    pub async fn wait_for_within(
        &self,
        css: &str,
        limit: Duration,
    ) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(limit)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!(
                "no `{css}` within {limit:?} on {}: {e}\npage text:\n{}",
                self.path().await,
                self.body_text().await
            ),
        }
    }

    /// Waits until the page shown is `path` (after a click that navigates); answers the full
    /// path with its query.
    pub async fn wait_for_path(&self, path: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.path().await;
            if now.split('?').next() == Some(path) {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "still on {now}, not {path}, after {WAIT:?}; page text:\n{}",
                self.body_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page's visible text contains `text`; answers that text.
    pub async fn wait_for_text(&self, text: &str) -> String {
        self.wait_for_text_within(text, WAIT).await
    }

    /// As `wait_for_text`, with another limit (for pages whose own script updates them).
    pub async fn wait_for_text_within(&self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let body = self.body_text().await;
            if body.contains(text) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "`{text}` did not appear within {limit:?} on {}; page text:\n{body}",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The visible text of the whole page, as a person reads it.
    pub async fn body_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The visible text of the first element matching `css` (waits for it).
    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.expect("element text")
    }

    /// Types `value` into a form field found by its `name` or `id`, replacing what was there.
    pub async fn fill(&self, field: &str, value: &str) {
        let element = self.wait_for(&field_selector(field)).await;
        element
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {field}: {e}"));
        element
            .send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("type into {field}: {e}"));
    }

    /// Ticks a checkbox found by `name`/`id`, or by `name` and `value` (`"scopes=jobs:read"`).
    pub async fn check(&self, field: &str) {
        let css = match field.split_once('=') {
            Some((name, value)) => format!("input[name=\"{name}\"][value=\"{value}\"]"),
            None => field_selector(field),
        };
        let element = self.wait_for(&css).await;
        if !element.is_selected().await.unwrap_or(false) {
            element
                .click()
                .await
                .unwrap_or_else(|e| panic!("click {css}: {e}"));
        }
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        self.wait_for(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Presses keys on whatever has the focus, as a keyboard does: `Key::Tab`, `Key::Enter`,
    /// `" "` (Space) or text.
    pub async fn press(&self, keys: &str) {
        self.client
            .active_element()
            .await
            .expect("the focused element")
            .send_keys(keys)
            .await
            .unwrap_or_else(|e| panic!("press {keys:?}: {e}"));
    }

    /// Presses Tab until the focused element matches `css`; answers how many presses it took.
    /// Fails after `max` presses: the element is not reachable by keyboard.
    pub async fn tab_to(&self, css: &str, max: usize) -> usize {
        for presses in 1..=max {
            self.press(&fantoccini::key::Key::Tab.to_string()).await;
            if self.focused_matches(css).await {
                return presses;
            }
        }
        panic!(
            "`{css}` not reached with {max} Tab presses on {} (focus is on {})",
            self.path().await,
            self.focused().await
        );
    }

    /// Whether the element with the keyboard focus matches `css`.
    pub async fn focused_matches(&self, css: &str) -> bool {
        self.client
            .execute(
                "return document.activeElement !== null && document.activeElement.matches(arguments[0]);",
                vec![json!(css)],
            )
            .await
            .map(|v| v == json!(true))
            .unwrap_or(false)
    }

    /// A short description of the focused element (tag, id, name, text), for messages.
    pub async fn focused(&self) -> String {
        self.client
            .execute(
                "const e = document.activeElement; if (!e) return 'nothing';\
                 return e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + \
                 (e.name ? '[name=' + e.name + ']' : '') + ' ' + (e.innerText || e.value || '').slice(0, 40);",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    async fn cdp(&self, cmd: &'static str, params: Value) -> Value {
        self.client
            .issue_cmd(Cdp { cmd, params })
            .await
            .unwrap_or_else(|e| panic!("CDP {cmd}: {e}"))
    }

    /// Lays the page out at `width` CSS pixels, as a phone when narrow (touch, meta viewport).
    pub async fn set_width(&self, width: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600 }),
        )
        .await;
    }

    /// Saves the whole page (not just the window) at `width` as `target/screenshots/<file>.png`.
    pub async fn screenshot_at(&self, file: &str, width: u32) -> PathBuf {
        self.set_width(width).await;
        let size = self
            .client
            .execute(
                "const d = document.documentElement, b = document.body || d;\
                 return [Math.max(d.scrollWidth, b.scrollWidth), Math.max(d.scrollHeight, b.scrollHeight)];",
                vec![],
            )
            .await
            .expect("page size");
        let page_width = size[0].as_u64().unwrap_or(0);
        let height = size[1]
            .as_u64()
            .unwrap_or(900)
            .clamp(1, u64::from(MAX_SHOT_HEIGHT));
        // Not a failure (the layout is the dashboard's call), but worth a line: content wider
        // than the screen is cut off on a phone.
        if page_width > u64::from(width) {
            println!("  {file}: the page is {page_width}px wide at a {width}px screen (horizontal overflow)");
        }
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 }
                }),
            )
            .await;
        self.set_width(LAPTOP_WIDTH).await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        let path = screenshot_dir().join(format!("{file}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// `<name>.png` at the laptop width and `<name>-phone.png` at the phone width.
    pub async fn screenshots(&self, name: &str) -> [PathBuf; 2] {
        [
            self.screenshot_at(name, LAPTOP_WIDTH).await,
            self.screenshot_at(&format!("{name}-phone"), PHONE_WIDTH)
                .await,
        ]
    }

    /// Stops the page's pending timers (a page that reloads itself while a job runs), so that
    /// a check or a click is not cut short by a reload. Timer ids are consecutive integers, so
    /// clearing every id up to a fresh one clears them all. `reload` starts them again.
    pub async fn stop_timers(&self) {
        self.client
            .execute(
                "const last = setTimeout(function () {}, 0);\
                 for (let id = 0; id <= last; id++) { clearTimeout(id); clearInterval(id); }",
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("stopping the page's timers: {e}"));
    }

    /// Reloads the page (as F5 does).
    pub async fn reload(&self) {
        self.client
            .refresh()
            .await
            .unwrap_or_else(|e| panic!("reload: {e}"));
    }

    /// The page's weight; see `PageWeight`.
    pub async fn weight(&self) -> PageWeight {
        let answer = self
            .client
            .execute(
                "const w = { html: 0, css: 0, js: 0, other: 0, ttfb_ms: 0 };\
                 const nav = performance.getEntriesByType('navigation')[0];\
                 if (nav) { w.html = nav.encodedBodySize; w.ttfb_ms = nav.responseStart - nav.requestStart; }\
                 for (const r of performance.getEntriesByType('resource')) {\
                   const path = new URL(r.name).pathname;\
                   const kind = path.endsWith('.css') ? 'css' : path.endsWith('.js') ? 'js' : 'other';\
                   w[kind] += r.encodedBodySize;\
                 }\
                 return w;",
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("page weight: {e}"));
        serde_json::from_value(answer).expect("page weight")
    }

    /// Runs axe-core in the page and answers every violation (all impacts). The results are
    /// also kept in `target/screenshots/<name>.axe.json` beside the page's screenshots.
    pub async fn axe(&self, name: &str) -> Vec<Violation> {
        static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let source = SOURCE.get_or_init(axe_source);
        // Scripts run over WebDriver are not subject to the page's Content-Security-Policy.
        self.client
            .execute(source, vec![])
            .await
            .unwrap_or_else(|e| panic!("injecting axe-core: {e}"));
        let answer = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, { resultTypes: ['violations'] }).then(r => done({ violations: \
                   r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help, \
                     targets: v.nodes.map(n => n.target.join(' ')) })) }),\
                   e => done({ error: String(e) }));",
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("axe.run: {e}"));
        if let Some(error) = answer.get("error") {
            panic!("axe.run failed on {name}: {error}");
        }
        let violations: Vec<Violation> =
            serde_json::from_value(answer["violations"].clone()).expect("axe's violations");
        let record = json!({
            "page": name,
            "path": self.path().await,
            "violations": answer["violations"],
        });
        std::fs::write(
            screenshot_dir().join(format!("{name}.axe.json")),
            serde_json::to_string_pretty(&record).unwrap(),
        )
        .unwrap();
        violations
    }

    /// What every page of a walk gets: both screenshots, then axe with no serious or critical
    /// violations. Prints one line per page for the test's output. The page's timers are
    /// stopped first (see `stop_timers`).
    pub async fn check_page(&self, name: &str) -> Vec<Violation> {
        let started = Instant::now();
        self.stop_timers().await;
        let weight = self.weight().await;
        std::fs::write(
            screenshot_dir().join(format!("{name}.weight.json")),
            serde_json::to_string_pretty(&weight).unwrap(),
        )
        .unwrap();
        self.screenshots(name).await;
        let violations = self.axe(name).await;
        let ids: Vec<String> = violations
            .iter()
            .map(|v| format!("{} ({})", v.id, v.impact.as_deref().unwrap_or("?")))
            .collect();
        println!(
            "page {name} ({}, at {:.1} s, checked in {} ms): {:.1} kB (html {} B, css {} B, js {} B), \
             server {:.0} ms; axe {} violation(s){}{}",
            self.path().await,
            self.opened.elapsed().as_secs_f64(),
            started.elapsed().as_millis(),
            weight.total() as f64 / 1000.0,
            weight.html,
            weight.css,
            weight.js,
            weight.ttfb_ms,
            violations.len(),
            if ids.is_empty() { "" } else { ": " },
            ids.join(", ")
        );
        assert_no_serious_violations(name, &violations);
        violations
    }

    /// Ends the session cleanly (the driver is still ended on drop).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

fn field_selector(field: &str) -> String {
    format!("[name=\"{field}\"], [id=\"{field}\"]")
}

/// Opens a WebDriver session for headless Chromium on the driver at `port`.
async fn connect(port: u16) -> Client {
    let Value::Object(capabilities) = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": CHROMIUM, "args": CHROMIUM_ARGS },
    }) else {
        unreachable!("a JSON object")
    };
    let url = format!("http://127.0.0.1:{port}");
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("no WebDriver session from chromedriver on {url}: {e}"))
}
