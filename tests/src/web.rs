//! A browser for the dashboard's HTTP tests: reqwest with a cookie store and redirects off, so
//! every 303 is seen (and followed on purpose), plus the few look-ups into pages the tests make.

use crate::{record_secret, Stack};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::HeaderMap;
use std::sync::Arc;

/// A password that satisfies the pool's policy.
pub const PASSWORD: &str = "Correct-horse-1";

/// One answer of the dashboard.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub html: String,
}

impl Page {
    /// Where a redirect points.
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The CSRF token of the page's first form.
    pub fn csrf(&self) -> String {
        self.attribute_after("name=\"csrf\"", "value")
            .unwrap_or_else(|| panic!("no CSRF token on the page: {}", self.html))
    }

    /// The text inside the element with `id` (up to its first child tag).
    pub fn text_of(&self, id: &str) -> Option<String> {
        let start = self.html.find(&format!("id=\"{id}\""))?;
        let open_end = self.html[start..].find('>')? + start + 1;
        let close = self.html[open_end..].find('<')? + open_end;
        Some(unescape(self.html[open_end..close].trim()))
    }

    /// The value of attribute `name` of the element that contains `marker`.
    pub fn attribute_after(&self, marker: &str, name: &str) -> Option<String> {
        let at = self.html.find(marker)?;
        let tag_start = self.html[..at].rfind('<')?;
        let tag_end = self.html[at..].find('>')? + at;
        let tag = &self.html[tag_start..tag_end];
        let needle = format!("{name}=\"");
        let v = tag.find(&needle)? + needle.len();
        let end = tag[v..].find('"')? + v;
        Some(unescape(&tag[v..end]))
    }

    pub fn contains(&self, text: &str) -> bool {
        self.html.contains(text)
    }
}

/// The five entities askama escapes.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

pub struct Browser {
    client: reqwest::Client,
    jar: Arc<Jar>,
    base: String,
}

impl Browser {
    pub fn new(stack: &Stack) -> Browser {
        let jar = Arc::new(Jar::default());
        Browser {
            client: reqwest::Client::builder()
                .cookie_provider(jar.clone())
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar,
            base: stack.base_url.clone(),
        }
    }

    fn dashboard_url(&self) -> reqwest::Url {
        format!("{}/dashboard", self.base).parse().unwrap()
    }

    /// The value of a cookie the browser would send to the dashboard.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let header = self.jar.cookies(&self.dashboard_url())?;
        header
            .to_str()
            .ok()?
            .split("; ")
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// Puts a cookie into the browser, as a tampering user (or a thief) could.
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar.add_cookie_str(
            &format!("{name}={value}; Path=/dashboard; HttpOnly; SameSite=Lax"),
            &self.dashboard_url(),
        );
    }

    pub async fn get(&self, path: &str) -> Page {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    /// Posts a form as a browser would (`application/x-www-form-urlencoded`).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send(
            self.client
                .post(format!("{}{path}", self.base))
                .form(fields),
        )
        .await
    }

    /// Loads `page_path`, then posts its form to `action` with the page's CSRF token.
    pub async fn submit(&self, page_path: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let token = self.get(page_path).await.csrf();
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(fields);
        self.post(action, &all).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let response = request.send().await.expect("dashboard request failed");
        Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            html: response.text().await.unwrap(),
        }
    }

    /// Guide §2 through the pages: sign up, verify (the local Cognito takes any code), log in.
    pub async fn sign_up_and_log_in(&self, email: &str) {
        record_secret(PASSWORD);
        let signed_up = self
            .submit(
                "/dashboard/signup",
                "/dashboard/signup",
                &[("email", email), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(signed_up.status, 303, "sign-up: {}", signed_up.html);
        let verify_path = signed_up.location().to_string();
        assert!(
            verify_path.starts_with("/dashboard/verify?email="),
            "{verify_path}"
        );
        let verified = self
            .submit(
                &verify_path,
                "/dashboard/verify",
                &[("email", email), ("code", "123456")],
            )
            .await;
        assert_eq!(verified.status, 303, "verify: {}", verified.html);
        assert_eq!(verified.location(), "/dashboard/login");
        self.log_in(email, PASSWORD).await;
    }

    pub async fn log_in(&self, email: &str, password: &str) {
        let logged_in = self
            .submit(
                "/dashboard/login",
                "/dashboard/login",
                &[("email", email), ("password", password)],
            )
            .await;
        assert_eq!(logged_in.status, 303, "log in: {}", logged_in.html);
        assert_eq!(logged_in.location(), "/dashboard");
    }

    /// Creates an API key on the page (guide §3) and answers it (recorded for the log audit).
    pub async fn create_key(&self, name: &str, scopes: &[&str]) -> (Page, String) {
        let mut fields = vec![("name", name)];
        fields.extend(scopes.iter().map(|s| ("scopes", *s)));
        let page = self
            .submit("/dashboard/api-keys/new", "/dashboard/api-keys", &fields)
            .await;
        assert_eq!(page.status, 200, "create key: {}", page.html);
        let key = page
            .text_of("new-api-key")
            .expect("the new key on the page");
        record_secret(&key);
        (page, key)
    }
}

/// A fresh address per test.
pub fn new_email(what: &str) -> String {
    format!("{what}-{}@example.com", uuid::Uuid::new_v4().simple())
}
