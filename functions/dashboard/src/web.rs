//! The HTTP side of the dashboard: a parsed request (cookies, query, form), what a handler
//! answers ([`Out`]), the one error type ([`DashError`]) and the headers every answer carries.

use crate::session::{self, FLASH_COOKIE};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::StatusCode;
use lambda_http::{Body, Request, Response};
use mimiry_shared::error::ApiError;
use mimiry_shared::identity::IdentityError;
use mimiry_shared::routes::Matched;

/// Largest form body accepted (an SSH public key is at most 16 KiB).
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// No inline scripts or styles anywhere: the stylesheet and app.js are files of our own.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A request, parsed once.
pub struct Req {
    pub method: String,
    pub matched: Matched,
    pub headers: http::HeaderMap,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
}

impl Req {
    pub fn new(request: Request, matched: Matched) -> Result<Req, DashError> {
        let method = request.method().as_str().to_ascii_uppercase();
        let query = request
            .uri()
            .query()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let (parts, body) = request.into_parts();
        let bytes: &[u8] = body.as_ref();
        if bytes.len() > MAX_FORM_BYTES {
            return Err(DashError::BadRequest("The form is too large.".into()));
        }
        let form = if method == "POST" {
            form_urlencoded::parse(bytes).into_owned().collect()
        } else {
            Vec::new()
        };
        Ok(Req {
            method,
            matched,
            headers: parts.headers,
            query,
            form,
        })
    }

    pub fn param(&self, name: &str) -> &str {
        self.matched.param(name)
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A form field, trimmed; absent and empty are the same.
    pub fn field(&self, name: &str) -> &str {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    }

    /// A form field exactly as typed (passwords: spaces count).
    pub fn raw_field(&self, name: &str) -> &str {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// Every value of a repeated field (checkboxes).
    pub fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        session::cookie(&self.headers, name).filter(|v| !v.is_empty())
    }
}

/// What a handler answers: a page or a redirect, with cookies to set.
pub struct Out {
    pub status: StatusCode,
    pub body: String,
    pub content_type: &'static str,
    pub location: Option<String>,
    pub cookies: Vec<String>,
    pub cache: &'static str,
    /// Headers of this answer only (a download's `Content-Disposition`, a wider CSP); they
    /// replace the common ones of the same name.
    pub headers: Vec<(&'static str, String)>,
}

impl Out {
    pub fn html(status: StatusCode, body: String) -> Out {
        Out {
            status,
            body,
            content_type: "text/html; charset=utf-8",
            location: None,
            cookies: Vec::new(),
            // Every page shows someone's account (or a form with a CSRF token): never cached.
            cache: "no-store",
            headers: Vec::new(),
        }
    }

    /// `303 See Other`: after a POST the browser GETs `to` (post-redirect-get). `to` is one of
    /// our own paths, or Stripe's checkout page (whose URL Stripe gave us).
    pub fn redirect(to: impl Into<String>) -> Out {
        let mut out = Out::html(StatusCode::SEE_OTHER, String::new());
        out.location = Some(to.into());
        out
    }

    pub fn cookie(mut self, cookie: String) -> Out {
        self.cookies.push(cookie);
        self
    }

    pub fn flash(self, flash: Flash, secure: bool) -> Out {
        self.cookie(session::set_cookie(
            FLASH_COOKIE,
            flash.code(),
            Some(60),
            secure,
        ))
    }

    pub fn into_response(self, request_id: &str, head: bool) -> Response<Body> {
        let length = self.body.len();
        let mut response = Response::new(if head {
            Body::Empty
        } else {
            Body::Text(self.body)
        });
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(self.cache));
        headers.insert("content-security-policy", HeaderValue::from_static(CSP));
        headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
        if head {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert(mimiry_shared::http::REQUEST_ID_HEADER, v);
        }
        if let Some(to) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(LOCATION, to);
        }
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        for cookie in self.cookies {
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                headers.append(SET_COOKIE, v);
            }
        }
        response
    }
}

/// One-shot messages after a redirect. The cookie holds only the code, so nobody can make the
/// page say something of their choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flash {
    Verified,
    CodeSent,
    PasswordReset,
    SignedOut,
    KeyRevoked,
    SshKeyAdded,
    SshKeyDeleted,
    SecretSaved,
    SecretDeleted,
    CancelRequested,
    Cancelled,
    SessionExpired,
    CheckoutCancelled,
    BudgetsSaved,
    WebhookDeleted,
}

impl Flash {
    const ALL: [(Flash, &'static str, &'static str, bool); 15] = [
        (
            Flash::Verified,
            "verified",
            "Your email is verified. You can log in now.",
            true,
        ),
        (
            Flash::CodeSent,
            "code_sent",
            "We sent you a new code.",
            true,
        ),
        (
            Flash::PasswordReset,
            "password_reset",
            "Your password is changed. Log in with the new one.",
            true,
        ),
        (Flash::SignedOut, "signed_out", "You are logged out.", true),
        (
            Flash::KeyRevoked,
            "key_revoked",
            "The API key is revoked. Requests with it now get 401.",
            true,
        ),
        (Flash::SshKeyAdded, "ssh_key_added", "SSH key added.", true),
        (Flash::SecretSaved, "secret_saved", "Secret saved.", true),
        (
            Flash::SecretDeleted,
            "secret_deleted",
            "Secret deleted.",
            true,
        ),
        (
            Flash::SshKeyDeleted,
            "ssh_key_deleted",
            "SSH key deleted.",
            true,
        ),
        (
            Flash::CancelRequested,
            "cancel_requested",
            "Cancellation requested: the instance is being deleted.",
            true,
        ),
        (Flash::Cancelled, "cancelled", "The job is cancelled.", true),
        (
            Flash::SessionExpired,
            "session_expired",
            "Your session has ended. Please log in again.",
            false,
        ),
        (
            Flash::CheckoutCancelled,
            "checkout_cancelled",
            "Payment cancelled: nothing was charged and no credits were added.",
            false,
        ),
        (Flash::BudgetsSaved, "budgets_saved", "Budgets saved.", true),
        (
            Flash::WebhookDeleted,
            "webhook_deleted",
            "Webhook endpoint deleted: nothing more is sent to it.",
            true,
        ),
    ];

    pub fn code(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|f| f.0 == self)
            .map(|f| f.1)
            .unwrap_or("")
    }

    pub fn from_code(code: &str) -> Option<Flash> {
        Self::ALL.iter().find(|f| f.1 == code).map(|f| f.0)
    }

    pub fn message(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|f| f.0 == self)
            .map(|f| f.2)
            .unwrap_or("")
    }

    pub fn is_success(self) -> bool {
        Self::ALL.iter().find(|f| f.0 == self).is_some_and(|f| f.3)
    }
}

/// Everything that can end a dashboard request early; rendered in one place
/// (`crate::render_error`).
#[derive(Debug, thiserror::Error)]
pub enum DashError {
    /// No (valid) session on a signed-in page: go to Log in.
    #[error("sign-in required")]
    SignInRequired,
    /// A state-changing form without the visitor's CSRF token.
    #[error("CSRF token missing or wrong")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    /// From the shared domain (not found, conflicts, provider trouble, internal).
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Identity(IdentityError),
}

impl From<IdentityError> for DashError {
    fn from(e: IdentityError) -> Self {
        DashError::Identity(e)
    }
}

impl DashError {
    pub fn status(&self) -> StatusCode {
        match self {
            DashError::SignInRequired => StatusCode::SEE_OTHER,
            DashError::Csrf => StatusCode::FORBIDDEN,
            DashError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashError::Api(e) => e.status(),
            DashError::Identity(e) => identity_status(e),
        }
    }

    /// What the person reads. Internal details are logged, never shown.
    pub fn message(&self) -> String {
        match self {
            DashError::SignInRequired => "Please log in.".into(),
            DashError::Csrf => {
                "This form has expired or did not come from this site. Go back, reload the page and try again.".into()
            }
            DashError::BadRequest(m) => m.clone(),
            DashError::Api(ApiError::Internal(_)) => {
                "Something went wrong on our side. Please try again.".into()
            }
            DashError::Api(e) => e.to_string(),
            DashError::Identity(e) => e.to_string(),
        }
    }
}

pub fn identity_status(e: &IdentityError) -> StatusCode {
    match e {
        IdentityError::NotAuthorized => StatusCode::UNAUTHORIZED,
        IdentityError::NotConfirmed => StatusCode::FORBIDDEN,
        IdentityError::AlreadyExists => StatusCode::CONFLICT,
        IdentityError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
        IdentityError::Internal(_) | IdentityError::Unsupported(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    }
}
