//! The web dashboard (guide §2, §3, §6, §7, §10, §12): sign-up, verification, sign-in and
//! password reset against the Cognito user pool; API keys, SSH keys, jobs and the credit
//! balance of the signed-in person's account. Server-rendered HTML (askama templates), plain
//! forms, every path under `/dashboard`.
//!
//! A request: route (the shared table) → parse ([`web::Req`]) → who is it ([`Visitor`], the
//! signed session cookie) → CSRF on every POST → the page's handler, which calls the same
//! shared domain code as the API → render. One error type, [`web::DashError`], rendered once.

mod budgets;
mod console;
mod credits;
mod public;
pub mod session;
pub mod views;
pub mod web;
mod webhooks;

use askama::Template;
use http::StatusCode;
use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::billing::{Billing, BillingConfig};
use mimiry_shared::config::{Config, IdentityConfig};
use mimiry_shared::error::ApiError;
use mimiry_shared::identity::{Cognito, TokenVerifier, Tokens};
use mimiry_shared::jobs::report_token::SigningKey;
use mimiry_shared::lambda::HttpFunction;
use mimiry_shared::notices::Notices;
use mimiry_shared::provider::GpuProvider;
use mimiry_shared::queue::JobQueue;
use mimiry_shared::routes::{match_route, RouteName, DASHBOARD};
use mimiry_shared::store::accounts::Account;
use mimiry_shared::store::Store;
use mimiry_shared::wiring;
use session::{Session, Signer};
use std::sync::Arc;
use std::time::Instant;
use views::{Chrome, ErrorPage, FlashView, HeaderUser};
use web::{DashError, Flash, Out, Req};

pub const FUNCTION: &str = DASHBOARD;

/// What the function keeps between invocations: built once in `main`.
pub struct App {
    pub store: Store,
    pub provider: Arc<dyn GpuProvider>,
    /// Every enabled provider: deleting an SSH key removes the copies jobs registered there.
    pub providers: mimiry_shared::provider::ProviderRegistry,
    pub queue: JobQueue,
    /// Signed webhooks: told when a queued job is cancelled at once.
    pub webhooks: mimiry_shared::webhooks::WebhookQueue,
    /// The webhook rules (which URLs are allowed) for the Webhooks page.
    pub webhook_config: mimiry_shared::webhooks::WebhookConfig,
    /// Stripe Checkout: Add Credits starts a session; the webhook (another function) credits.
    pub billing: Billing,
    /// The low-balance notice (Budgets): checked when its threshold is saved.
    pub notices: Notices,
    pub cognito: Cognito,
    pub tokens: TokenVerifier,
    /// Signs session cookies and CSRF tokens; read from Secrets Manager on first use.
    pub session_key: SigningKey,
    pub identity: IdentityConfig,
    /// Whether cookies carry `Secure` (not on the local stack's plain http).
    pub secure: bool,
    /// Seals the values added on the Secrets page.
    pub vault: mimiry_shared::secrets::Vault,
}

impl HttpFunction for App {
    fn new(clients: &AwsClients, config: &Config) -> App {
        let identity = config.identity.clone();
        App {
            store: wiring::store(clients, config),
            provider: wiring::provider(clients, config),
            providers: wiring::providers(clients, config),
            queue: JobQueue::new(clients.sqs.clone(), config.jobs_queue_url.clone()),
            webhooks: wiring::webhook_queue(clients, config),
            webhook_config: config.webhooks.clone(),
            billing: Billing::new(clients, BillingConfig::from_env()),
            notices: wiring::notices(clients, config),
            cognito: Cognito::from_sdk(&clients.sdk, identity.client_id.clone()),
            tokens: TokenVerifier::new(
                identity.issuer(),
                identity.client_id.clone(),
                identity.jwks_url.clone(),
            ),
            session_key: SigningKey::new(
                clients.secrets.clone(),
                identity.session_secret_id.clone(),
            ),
            secure: session::secure_cookies(&identity.dashboard_url),
            vault: wiring::vault(clients, config),
            identity,
        }
    }

    async fn handle(&self, request: Request) -> Response<Body> {
        handle(self, request).await
    }
}

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    let started = Instant::now();
    let request_id = mimiry_shared::http::request_id_of(&request);
    let method = request.method().as_str().to_ascii_uppercase();
    let head = method == "HEAD";
    let path = request.uri().path().to_string();
    let mut route = "";
    let mut account = None;
    let result = match match_route(&method, &path) {
        Ok(m) if m.route.function == FUNCTION => {
            route = m.route.path;
            match Req::new(request, m) {
                Ok(req) => dispatch(app, &req, &mut account).await,
                Err(e) => Err((e, None)),
            }
        }
        Ok(_) => Err((DashError::Api(ApiError::RouteNotFound), None)),
        Err(e) => Err((DashError::Api(e), None)),
    };
    let out = match result {
        Ok(out) => out,
        Err((e, visitor)) => {
            if let DashError::Api(ApiError::Internal(detail)) = &e {
                tracing::error!(request_id, route, detail = %detail, "dashboard request failed");
            }
            render_error(app, e, visitor.as_ref())
        }
    };
    tracing::info!(
        request_id,
        method,
        route,
        account = account.as_deref(),
        status = out.status.as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    out.into_response(&request_id, head)
}

type Failure = (DashError, Option<Visitor>);

async fn dispatch(app: &App, req: &Req, account: &mut Option<String>) -> Result<Out, Failure> {
    use RouteName::*;
    match req.matched.route.name {
        DashRoot => return Ok(Out::redirect("/dashboard")),
        DashStatic => {
            return static_file(req.param("file"))
                .ok_or((DashError::Api(ApiError::RouteNotFound), None))
        }
        _ => {}
    }
    let visitor = Visitor::of(app, req).await.map_err(|e| (e, None))?;
    *account = visitor.session.as_ref().map(|s| s.account_id.clone());
    if req.method == "POST"
        && !visitor
            .signer
            .csrf_ok(&visitor.sid, Some(req.field("csrf")))
    {
        return Err((DashError::Csrf, Some(visitor)));
    }
    let name = req.matched.route.name;
    let result = match name {
        DashSignUpPage | DashSignUp | DashVerifyPage | DashVerify | DashResendCode
        | DashLogInPage | DashLogIn | DashForgotPage | DashForgot | DashResetPage | DashReset
        | DashLogOut => public::handle(app, req, &visitor, name).await,
        _ => console::handle(app, req, &visitor, name).await,
    };
    result
        .map(|out| visitor.finish(out))
        .map_err(|e| (e, Some(visitor)))
}

/// The stylesheet and the script, compiled in.
fn static_file(name: &str) -> Option<Out> {
    let (body, content_type) = match name {
        "style.css" => (
            include_str!("../static/style.css"),
            "text/css; charset=utf-8",
        ),
        "app.js" => (
            include_str!("../static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return None,
    };
    let mut out = Out::html(StatusCode::OK, body.to_string());
    out.content_type = content_type;
    out.cache = "public, max-age=300";
    Some(out)
}

/// Whoever sent the request: their session id (for CSRF), the session when signed in, the
/// flash message waiting for them, and the cookies this answer must set.
pub struct Visitor {
    pub sid: String,
    pub session: Option<Session>,
    pub flash: Option<Flash>,
    pub signer: Signer,
    pub secure: bool,
    pub emulated: bool,
    cookies: Vec<String>,
}

impl Visitor {
    async fn of(app: &App, req: &Req) -> Result<Visitor, DashError> {
        let signer = Signer::new(app.session_key.get().await?);
        let mut cookies = Vec::new();
        let now = chrono::Utc::now().timestamp();
        let mut session = req
            .cookie(session::SESSION_COOKIE)
            .and_then(|v| signer.open(v));
        if session.as_ref().is_some_and(|s| s.exp <= now) {
            let expired = session.take().expect("checked above");
            // Renew from the refresh token (revoked by a global sign-out); else sign in again.
            session = match req.cookie(session::REFRESH_COOKIE) {
                Some(refresh) => renew(app, &expired, refresh).await,
                None => None,
            };
            cookies.push(match &session {
                Some(s) => {
                    session::set_cookie(session::SESSION_COOKIE, &signer.seal(s), None, app.secure)
                }
                None => session::clear_cookie(session::SESSION_COOKIE, app.secure),
            });
        }
        let sid = match (&session, req.cookie(session::SID_COOKIE)) {
            (Some(s), _) => s.sid.clone(),
            (None, Some(sid)) if sid.len() >= 16 && sid.len() <= 64 => sid.to_string(),
            _ => {
                let sid = session::new_sid();
                cookies.push(session::set_cookie(
                    session::SID_COOKIE,
                    &sid,
                    None,
                    app.secure,
                ));
                sid
            }
        };
        let flash = req.cookie(session::FLASH_COOKIE).and_then(Flash::from_code);
        if req.cookie(session::FLASH_COOKIE).is_some() && req.method == "GET" {
            cookies.push(session::clear_cookie(session::FLASH_COOKIE, app.secure));
        }
        Ok(Visitor {
            sid,
            session,
            flash,
            signer,
            secure: app.secure,
            emulated: app.identity.emulated,
            cookies,
        })
    }

    /// Adds the visitor's cookies to the answer (unless the handler replaced the session).
    fn finish(&self, mut out: Out) -> Out {
        let replaced: Vec<String> = out
            .cookies
            .iter()
            .filter_map(|c| c.split('=').next().map(str::to_string))
            .collect();
        for cookie in &self.cookies {
            let name = cookie.split('=').next().unwrap_or("");
            if !replaced.iter().any(|r| r == name) {
                out.cookies.push(cookie.clone());
            }
        }
        out
    }

    pub fn csrf(&self) -> String {
        self.signer.csrf_token(&self.sid)
    }

    /// The frame of a page; `account` fills the header of signed-in pages.
    pub fn chrome(
        &self,
        title: &'static str,
        nav: &'static str,
        account: Option<&Account>,
    ) -> Chrome {
        Chrome {
            title,
            nav,
            user: match (account, &self.session) {
                (Some(a), Some(s)) => Some(HeaderUser::of(a, &s.email)),
                _ => None,
            },
            csrf: self.csrf(),
            flash: self.flash.map(|f| FlashView {
                message: f.message(),
                success: f.is_success(),
            }),
            error: None,
            emulated: self.emulated,
        }
    }
}

/// A new session from the refresh token, for the same person and account.
async fn renew(app: &App, expired: &Session, refresh_token: &str) -> Option<Session> {
    let tokens = app.cognito.refresh(refresh_token).await.ok()?;
    let person = app.tokens.verify_id_token(&tokens.id_token).await.ok()?;
    (person.sub == expired.sub).then(|| Session {
        sid: expired.sid.clone(),
        exp: expires_at(&tokens),
        access_token: tokens.access_token,
        ..expired.clone()
    })
}

pub fn expires_at(tokens: &Tokens) -> i64 {
    chrono::Utc::now().timestamp() + tokens.expires_in
}

/// Renders a page template, or a 500 if it cannot (it always can: askama checked it).
pub fn page(status: StatusCode, template: &impl Template) -> Out {
    match template.render() {
        Ok(html) => Out::html(status, html),
        Err(e) => {
            tracing::error!(error = %e, "rendering a template");
            Out::html(StatusCode::INTERNAL_SERVER_ERROR, "Internal error".into())
        }
    }
}

/// The one place a [`DashError`] becomes a page.
fn render_error(app: &App, e: DashError, visitor: Option<&Visitor>) -> Out {
    if let DashError::SignInRequired = e {
        let mut out = Out::redirect("/dashboard/login");
        if let Some(v) = visitor {
            out = v.finish(out);
        }
        return out;
    }
    let status = e.status();
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::METHOD_NOT_ALLOWED => "Not allowed",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    let message = match &e {
        DashError::Api(ApiError::RouteNotFound) => "There is no such page.".to_string(),
        _ => e.message(),
    };
    let chrome = match visitor {
        Some(v) => v.chrome(title, "", None),
        None => Chrome {
            title,
            nav: "",
            user: None,
            csrf: String::new(),
            flash: None,
            error: None,
            emulated: app.identity.emulated,
        },
    };
    let out = page(status, &ErrorPage { c: chrome, message });
    match visitor {
        Some(v) => v.finish(out),
        None => out,
    }
}
