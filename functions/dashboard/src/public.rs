//! Signed-out pages: Sign up, Verify email (and a new code), Log in, Forgot password, Reset
//! password, and Log out. Cognito does the work; these pages say what happened in words.

use crate::session::{self, Session, REFRESH_COOKIE, SESSION_COOKIE, SID_COOKIE};
use crate::views::{ForgotPage, LogInPage, ResetPage, SignUpPage, VerifyPage};
use crate::web::{identity_status, DashError, Flash, Out, Req};
use crate::{expires_at, page, App, Visitor};
use http::StatusCode;
use mimiry_shared::error::ApiError;
use mimiry_shared::identity::cognito::PASSWORD_RULES;
use mimiry_shared::identity::IdentityError;
use mimiry_shared::routes::RouteName;

pub async fn handle(app: &App, req: &Req, v: &Visitor, name: RouteName) -> Result<Out, DashError> {
    use RouteName::*;
    // Someone signed in has no business on these forms (Log out aside).
    if v.session.is_some() && matches!(name, DashSignUpPage | DashLogInPage) {
        return Ok(Out::redirect("/dashboard"));
    }
    match name {
        DashSignUpPage => Ok(sign_up_page(v, "", None)),
        DashSignUp => sign_up(app, req, v).await,
        DashVerifyPage => Ok(verify_page(v, req.query("email").unwrap_or(""), None)),
        DashVerify => verify(app, req, v).await,
        DashResendCode => resend(app, req, v).await,
        DashLogInPage => Ok(log_in_page(v, "", None)),
        DashLogIn => log_in(app, req, v).await,
        DashForgotPage => Ok(forgot_page(v, "", None)),
        DashForgot => forgot(app, req, v).await,
        DashResetPage => Ok(reset_page(v, req.query("email").unwrap_or(""), None)),
        DashReset => reset(app, req, v).await,
        DashLogOut => log_out(app, v).await,
        _ => Err(DashError::Api(ApiError::RouteNotFound)),
    }
}

/// A page shown again with the problem: `error` is (status, message).
type Problem = Option<(StatusCode, String)>;

fn problem(e: &IdentityError) -> Problem {
    if let IdentityError::Internal(detail) | IdentityError::Unsupported(detail) = e {
        tracing::error!(detail = %detail, "Cognito call failed");
    }
    Some((identity_status(e), e.to_string()))
}

fn missing(what: &str) -> Problem {
    Some((StatusCode::BAD_REQUEST, format!("Please enter {what}.")))
}

fn with_problem(
    v: &Visitor,
    title: &'static str,
    error: Problem,
) -> (crate::views::Chrome, StatusCode) {
    let mut c = v.chrome(title, "", None);
    let status = match error {
        Some((status, message)) => {
            c.error = Some(message);
            status
        }
        None => StatusCode::OK,
    };
    (c, status)
}

/// `/dashboard/{page}?email=…`
fn with_email(page: &str, email: &str) -> String {
    let email: String = form_urlencoded::byte_serialize(email.as_bytes()).collect();
    format!("/dashboard/{page}?email={email}")
}

fn sign_up_page(v: &Visitor, email: &str, error: Problem) -> Out {
    let (c, status) = with_problem(v, "Sign up", error);
    page(
        status,
        &SignUpPage {
            c,
            email: email.to_string(),
            rules: PASSWORD_RULES,
        },
    )
}

async fn sign_up(app: &App, req: &Req, v: &Visitor) -> Result<Out, DashError> {
    let (email, password) = (req.field("email"), req.raw_field("password"));
    if email.is_empty() || password.is_empty() {
        return Ok(sign_up_page(
            v,
            email,
            missing("your email address and a password"),
        ));
    }
    match app.cognito.sign_up(email, password).await {
        Ok(()) => Ok(Out::redirect(with_email("verify", email))),
        Err(e) => Ok(sign_up_page(v, email, problem(&e))),
    }
}

fn verify_page(v: &Visitor, email: &str, error: Problem) -> Out {
    let (c, status) = with_problem(v, "Verify email", error);
    page(
        status,
        &VerifyPage {
            c,
            email: email.to_string(),
        },
    )
}

async fn verify(app: &App, req: &Req, v: &Visitor) -> Result<Out, DashError> {
    let (email, code) = (req.field("email"), req.field("code"));
    if email.is_empty() || code.is_empty() {
        return Ok(verify_page(
            v,
            email,
            missing("your email address and the code"),
        ));
    }
    match app.cognito.confirm_sign_up(email, code).await {
        Ok(()) => Ok(Out::redirect("/dashboard/login").flash(Flash::Verified, v.secure)),
        Err(e) => Ok(verify_page(v, email, problem(&e))),
    }
}

async fn resend(app: &App, req: &Req, v: &Visitor) -> Result<Out, DashError> {
    let email = req.field("email");
    if email.is_empty() {
        return Ok(verify_page(v, email, missing("your email address")));
    }
    match app.cognito.resend_code(email).await {
        // An unknown address is answered like a known one: nothing to learn here.
        Ok(()) | Err(IdentityError::NotAuthorized) => {
            Ok(Out::redirect(with_email("verify", email)).flash(Flash::CodeSent, v.secure))
        }
        Err(e) => Ok(verify_page(v, email, problem(&e))),
    }
}

fn log_in_page(v: &Visitor, email: &str, error: Problem) -> Out {
    let (c, status) = with_problem(v, "Log in", error);
    page(
        status,
        &LogInPage {
            c,
            email: email.to_string(),
        },
    )
}

async fn log_in(app: &App, req: &Req, v: &Visitor) -> Result<Out, DashError> {
    let (email, password) = (req.field("email"), req.raw_field("password"));
    if email.is_empty() || password.is_empty() {
        return Ok(log_in_page(
            v,
            email,
            missing("your email address and password"),
        ));
    }
    let tokens = match app.cognito.sign_in(email, password).await {
        Ok(tokens) => tokens,
        // Right password, unverified email: finish the verification first.
        Err(IdentityError::NotConfirmed) => return Ok(Out::redirect(with_email("verify", email))),
        Err(e) => return Ok(log_in_page(v, email, problem(&e))),
    };
    // Trust nothing Cognito handed over without checking it: signature, pool, client, use.
    let person = app.tokens.verify_id_token(&tokens.id_token).await;
    let access_sub = app.tokens.verify_access_token(&tokens.access_token).await;
    let person = match (person, access_sub) {
        (Ok(p), Ok(sub)) if p.sub == sub => p,
        (p, a) => {
            return Err(DashError::Api(ApiError::Internal(format!(
                "tokens from a sign-in were refused: id {:?}, access {:?}",
                p.err(),
                a.err()
            ))))
        }
    };
    let account = app
        .store
        .account_for_person(&person.sub, &person.email, app.identity.signup_credit)
        .await?;
    // A new session id at every sign-in: a planted one (fixation) is worth nothing.
    let session = Session {
        sid: session::new_sid(),
        sub: person.sub,
        email: person.email,
        account_id: account.account_id,
        exp: expires_at(&tokens),
        access_token: tokens.access_token.clone(),
    };
    let mut out = Out::redirect("/dashboard")
        .cookie(session::set_cookie(
            SESSION_COOKIE,
            &v.signer.seal(&session),
            None,
            v.secure,
        ))
        .cookie(session::set_cookie(
            SID_COOKIE,
            &session.sid,
            None,
            v.secure,
        ));
    if let Some(refresh) = &tokens.refresh_token {
        out = out.cookie(session::set_cookie(
            REFRESH_COOKIE,
            refresh,
            Some(session::REFRESH_MAX_AGE_SECS),
            v.secure,
        ));
    }
    Ok(out)
}

fn forgot_page(v: &Visitor, email: &str, error: Problem) -> Out {
    let (c, status) = with_problem(v, "Forgot password", error);
    page(
        status,
        &ForgotPage {
            c,
            email: email.to_string(),
        },
    )
}

async fn forgot(app: &App, req: &Req, v: &Visitor) -> Result<Out, DashError> {
    let email = req.field("email");
    if email.is_empty() {
        return Ok(forgot_page(v, email, missing("your email address")));
    }
    match app.cognito.forgot_password(email).await {
        Ok(()) => Ok(Out::redirect(with_email("reset", email))),
        Err(e) => Ok(forgot_page(v, email, problem(&e))),
    }
}

fn reset_page(v: &Visitor, email: &str, error: Problem) -> Out {
    let (c, status) = with_problem(v, "Reset password", error);
    page(
        status,
        &ResetPage {
            c,
            email: email.to_string(),
            rules: PASSWORD_RULES,
        },
    )
}

async fn reset(app: &App, req: &Req, v: &Visitor) -> Result<Out, DashError> {
    let (email, code, password) = (
        req.field("email"),
        req.field("code"),
        req.raw_field("password"),
    );
    if email.is_empty() || code.is_empty() || password.is_empty() {
        return Ok(reset_page(
            v,
            email,
            missing("your email address, the code and a new password"),
        ));
    }
    match app
        .cognito
        .confirm_forgot_password(email, code, password)
        .await
    {
        Ok(()) => Ok(Out::redirect("/dashboard/login").flash(Flash::PasswordReset, v.secure)),
        Err(e) => Ok(reset_page(v, email, problem(&e))),
    }
}

/// Ends the session here and, through Cognito's global sign-out, the refresh tokens of every
/// browser the person used.
async fn log_out(app: &App, v: &Visitor) -> Result<Out, DashError> {
    if let Some(s) = &v.session {
        if let Err(e) = app.cognito.global_sign_out(&s.access_token).await {
            tracing::warn!(error = %e, "global sign-out failed; the session cookie is cleared anyway");
        }
    }
    Ok(Out::redirect("/dashboard/login")
        .cookie(session::clear_cookie(SESSION_COOKIE, v.secure))
        .cookie(session::clear_cookie(REFRESH_COOKIE, v.secure))
        .cookie(session::set_cookie(
            SID_COOKIE,
            &session::new_sid(),
            None,
            v.secure,
        ))
        .flash(Flash::SignedOut, v.secure))
}
