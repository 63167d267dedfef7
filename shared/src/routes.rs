//! The one table of public routes: which function serves them and who may call them.
//!
//! The router in every function, the local server, the OpenAPI check and the security tests all
//! read this table, so a route cannot be added in one place and forgotten in another. It holds
//! the JSON API (API keys, the job token) and the dashboard's HTML pages (a browser session, or
//! nobody); [`Route::is_api`] tells them apart, and only the API is in the OpenAPI document.

use crate::auth::Scope;
use crate::error::ApiError;
use std::collections::HashMap;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// An API key holding this scope.
    Scope(Scope),
    /// Any valid API key (e.g. `GET /account`).
    AnyKey,
    /// No API key: the caller proves itself otherwise (the per-job report token).
    JobToken,
    /// No API key: Stripe, proving itself with `Stripe-Signature` (the billing webhook).
    StripeSignature,
    /// A dashboard page for a signed-in person: the dashboard's session cookie (no API key;
    /// without a session the page redirects to sign-in).
    Session,
    /// A dashboard page anyone may open (sign-up, sign-in, reset, static files).
    Public,
}

impl Access {
    /// Whether the route is called with an API key (else it proves itself otherwise).
    pub fn needs_api_key(self) -> bool {
        matches!(self, Access::Scope(_) | Access::AnyKey)
    }
}

/// One public route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// Path template in SAM/API Gateway syntax: `/jobs/{id}`.
    pub path: &'static str,
    pub access: Access,
    /// The function (route group) that serves it: `functions/<function>`.
    pub function: &'static str,
    /// Stable name the handlers match on.
    pub name: RouteName,
    /// The query parameters an API route accepts; any other is a 400 naming it.
    pub query: &'static [&'static str],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteName {
    GetAccount,
    ListInstanceTypes,
    GetAvailability,
    ListLocations,
    ListImages,
    ListProviders,
    ListSshKeys,
    CreateSshKey,
    DeleteSshKey,
    ListSecrets,
    PutSecret,
    DeleteSecret,
    GetJobEnv,
    ListJobs,
    SubmitJob,
    GetJob,
    CancelJob,
    ReportJob,
    ShipJobLogs,
    GetJobLogs,
    GetLedger,
    StripeWebhook,
    ListWebhooks,
    CreateWebhook,
    GetWebhook,
    DeleteWebhook,
    // The dashboard (functions/dashboard): HTML pages under /dashboard.
    DashRoot,
    DashStatic,
    DashHome,
    DashSignUpPage,
    DashSignUp,
    DashVerifyPage,
    DashVerify,
    DashResendCode,
    DashLogInPage,
    DashLogIn,
    DashForgotPage,
    DashForgot,
    DashResetPage,
    DashReset,
    DashLogOutPage,
    DashLogOut,
    DashCredits,
    DashBuyCredits,
    DashCreditsSuccess,
    DashBilling,
    DashBillingCsv,
    DashBudgets,
    DashSaveBudgets,
    DashApiKeys,
    DashNewApiKey,
    DashCreateApiKey,
    DashRevokeApiKeyPage,
    DashRevokeApiKey,
    DashSshKeys,
    DashNewSshKey,
    DashAddSshKey,
    DashDeleteSshKeyPage,
    DashDeleteSshKey,
    DashWebhooks,
    DashNewWebhook,
    DashAddWebhook,
    DashWebhook,
    DashDeleteWebhookPage,
    DashDeleteWebhook,
    DashSecrets,
    DashAddSecret,
    DashDeleteSecretPage,
    DashDeleteSecret,
    DashJobs,
    DashJob,
    DashJobLogs,
    DashCancelJobPage,
    DashCancelJob,
    DashSupport,
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    function: &'static str,
    name: RouteName,
) -> Route {
    Route {
        method,
        path,
        access,
        function,
        name,
        query: &[],
    }
}

impl Route {
    /// A route of the JSON API (in the OpenAPI document), not a dashboard page.
    pub const fn is_api(&self) -> bool {
        !matches!(self.access, Access::Session | Access::Public)
    }

    const fn with_query(mut self, query: &'static [&'static str]) -> Route {
        self.query = query;
        self
    }
}

use Access::{AnyKey, JobToken, Public, Session, StripeSignature};
use RouteName::*;
use Scope::*;

pub const ROUTES: &[Route] = &[
    route("GET", "/account", AnyKey, "account", GetAccount),
    route(
        "GET",
        "/instances",
        Access::Scope(InstancesRead),
        "catalog",
        ListInstanceTypes,
    )
    .with_query(&["gpu", "gpu_count"]),
    route(
        "GET",
        "/availability",
        Access::Scope(InstancesRead),
        "catalog",
        GetAvailability,
    )
    .with_query(&["instance_type", "location"]),
    route(
        "GET",
        "/locations",
        Access::Scope(InstancesRead),
        "catalog",
        ListLocations,
    ),
    route(
        "GET",
        "/images",
        Access::Scope(InstancesRead),
        "catalog",
        ListImages,
    )
    .with_query(&["instance_type"]),
    route(
        "GET",
        "/providers",
        Access::Scope(InstancesRead),
        "catalog",
        ListProviders,
    ),
    route(
        "GET",
        "/ssh-keys",
        Access::Scope(SshKeysRead),
        "ssh-keys",
        ListSshKeys,
    )
    .with_query(&["limit", "cursor"]),
    route(
        "POST",
        "/ssh-keys",
        Access::Scope(SshKeysWrite),
        "ssh-keys",
        CreateSshKey,
    ),
    route(
        "DELETE",
        "/ssh-keys/{id}",
        Access::Scope(SshKeysWrite),
        "ssh-keys",
        DeleteSshKey,
    ),
    route(
        "GET",
        "/secrets",
        Access::Scope(SecretsRead),
        "secrets",
        ListSecrets,
    ),
    route(
        "POST",
        "/secrets",
        Access::Scope(SecretsWrite),
        "secrets",
        PutSecret,
    ),
    route(
        "DELETE",
        "/secrets/{name}",
        Access::Scope(SecretsWrite),
        "secrets",
        DeleteSecret,
    ),
    route("GET", "/jobs", Access::Scope(JobsRead), "jobs", ListJobs)
        .with_query(&["status", "limit", "cursor"]),
    route("POST", "/jobs", Access::Scope(JobsWrite), "jobs", SubmitJob),
    route("GET", "/jobs/{id}", Access::Scope(JobsRead), "jobs", GetJob),
    route(
        "DELETE",
        "/jobs/{id}",
        Access::Scope(JobsWrite),
        "jobs",
        CancelJob,
    ),
    route("POST", "/jobs/{id}/report", JobToken, "jobs", ReportJob),
    route("POST", "/jobs/{id}/logs", JobToken, "jobs", ShipJobLogs),
    // The wrapper's boot-time fetch of the job's env and decrypted secrets (issue 15).
    route("GET", "/jobs/{id}/env", JobToken, "jobs", GetJobEnv),
    route(
        "GET",
        "/jobs/{id}/logs",
        Access::Scope(JobsRead),
        "jobs",
        GetJobLogs,
    )
    .with_query(&["after", "limit", "wait", "tail"]),
    route(
        "GET",
        "/webhooks",
        Access::Scope(WebhooksRead),
        "webhooks",
        ListWebhooks,
    ),
    route(
        "POST",
        "/webhooks",
        Access::Scope(WebhooksWrite),
        "webhooks",
        CreateWebhook,
    ),
    route(
        "GET",
        "/webhooks/{id}",
        Access::Scope(WebhooksRead),
        "webhooks",
        GetWebhook,
    ),
    route(
        "DELETE",
        "/webhooks/{id}",
        Access::Scope(WebhooksWrite),
        "webhooks",
        DeleteWebhook,
    ),
    route("GET", "/account/ledger", AnyKey, "billing", GetLedger).with_query(&["limit", "cursor"]),
    route(
        "POST",
        "/billing/stripe-webhook",
        StripeSignature,
        "billing",
        StripeWebhook,
    ),
    // The dashboard. Literal paths come before `{id}` ones of the same shape. Pages read the
    // query parameters they know and ignore the rest, as web pages do (links get `utm_…`).
    route("GET", "/", Public, DASHBOARD, DashRoot),
    route(
        "GET",
        "/dashboard/static/{file}",
        Public,
        DASHBOARD,
        DashStatic,
    ),
    route("GET", "/dashboard", Session, DASHBOARD, DashHome),
    route(
        "GET",
        "/dashboard/signup",
        Public,
        DASHBOARD,
        DashSignUpPage,
    ),
    route("POST", "/dashboard/signup", Public, DASHBOARD, DashSignUp),
    route(
        "GET",
        "/dashboard/verify",
        Public,
        DASHBOARD,
        DashVerifyPage,
    ),
    route("POST", "/dashboard/verify", Public, DASHBOARD, DashVerify),
    route(
        "POST",
        "/dashboard/verify/resend",
        Public,
        DASHBOARD,
        DashResendCode,
    ),
    route("GET", "/dashboard/login", Public, DASHBOARD, DashLogInPage),
    route("POST", "/dashboard/login", Public, DASHBOARD, DashLogIn),
    route(
        "GET",
        "/dashboard/forgot",
        Public,
        DASHBOARD,
        DashForgotPage,
    ),
    route("POST", "/dashboard/forgot", Public, DASHBOARD, DashForgot),
    route("GET", "/dashboard/reset", Public, DASHBOARD, DashResetPage),
    route("POST", "/dashboard/reset", Public, DASHBOARD, DashReset),
    route(
        "GET",
        "/dashboard/logout",
        Session,
        DASHBOARD,
        DashLogOutPage,
    ),
    route("POST", "/dashboard/logout", Public, DASHBOARD, DashLogOut),
    route("GET", "/dashboard/credits", Session, DASHBOARD, DashCredits),
    route(
        "POST",
        "/dashboard/credits",
        Session,
        DASHBOARD,
        DashBuyCredits,
    ),
    route(
        "GET",
        "/dashboard/credits/success",
        Session,
        DASHBOARD,
        DashCreditsSuccess,
    ),
    route("GET", "/dashboard/billing", Session, DASHBOARD, DashBilling),
    route("GET", "/dashboard/budgets", Session, DASHBOARD, DashBudgets),
    route(
        "POST",
        "/dashboard/budgets",
        Session,
        DASHBOARD,
        DashSaveBudgets,
    ),
    route(
        "GET",
        "/dashboard/billing.csv",
        Session,
        DASHBOARD,
        DashBillingCsv,
    ),
    route(
        "GET",
        "/dashboard/api-keys",
        Session,
        DASHBOARD,
        DashApiKeys,
    ),
    route(
        "GET",
        "/dashboard/api-keys/new",
        Session,
        DASHBOARD,
        DashNewApiKey,
    ),
    route(
        "POST",
        "/dashboard/api-keys",
        Session,
        DASHBOARD,
        DashCreateApiKey,
    ),
    route(
        "GET",
        "/dashboard/api-keys/{id}/revoke",
        Session,
        DASHBOARD,
        DashRevokeApiKeyPage,
    ),
    route(
        "POST",
        "/dashboard/api-keys/{id}/revoke",
        Session,
        DASHBOARD,
        DashRevokeApiKey,
    ),
    route(
        "GET",
        "/dashboard/ssh-keys",
        Session,
        DASHBOARD,
        DashSshKeys,
    ),
    route(
        "GET",
        "/dashboard/ssh-keys/new",
        Session,
        DASHBOARD,
        DashNewSshKey,
    ),
    route(
        "POST",
        "/dashboard/ssh-keys",
        Session,
        DASHBOARD,
        DashAddSshKey,
    ),
    route(
        "GET",
        "/dashboard/ssh-keys/{id}/delete",
        Session,
        DASHBOARD,
        DashDeleteSshKeyPage,
    ),
    route(
        "POST",
        "/dashboard/ssh-keys/{id}/delete",
        Session,
        DASHBOARD,
        DashDeleteSshKey,
    ),
    route(
        "GET",
        "/dashboard/webhooks",
        Session,
        DASHBOARD,
        DashWebhooks,
    ),
    route(
        "GET",
        "/dashboard/webhooks/new",
        Session,
        DASHBOARD,
        DashNewWebhook,
    ),
    route(
        "POST",
        "/dashboard/webhooks",
        Session,
        DASHBOARD,
        DashAddWebhook,
    ),
    route(
        "GET",
        "/dashboard/webhooks/{id}",
        Session,
        DASHBOARD,
        DashWebhook,
    ),
    route(
        "GET",
        "/dashboard/webhooks/{id}/delete",
        Session,
        DASHBOARD,
        DashDeleteWebhookPage,
    ),
    route(
        "POST",
        "/dashboard/webhooks/{id}/delete",
        Session,
        DASHBOARD,
        DashDeleteWebhook,
    ),
    // Account secrets (issue 15): names listed, values write-only.
    route("GET", "/dashboard/secrets", Session, DASHBOARD, DashSecrets),
    route(
        "POST",
        "/dashboard/secrets",
        Session,
        DASHBOARD,
        DashAddSecret,
    ),
    route(
        "GET",
        "/dashboard/secrets/{name}/delete",
        Session,
        DASHBOARD,
        DashDeleteSecretPage,
    ),
    route(
        "POST",
        "/dashboard/secrets/{name}/delete",
        Session,
        DASHBOARD,
        DashDeleteSecret,
    ),
    route("GET", "/dashboard/jobs", Session, DASHBOARD, DashJobs),
    route("GET", "/dashboard/jobs/{id}", Session, DASHBOARD, DashJob),
    // The job page's log follower (app.js): the API's log reader, for the session's account.
    route(
        "GET",
        "/dashboard/jobs/{id}/logs",
        Session,
        DASHBOARD,
        DashJobLogs,
    ),
    route(
        "GET",
        "/dashboard/jobs/{id}/cancel",
        Session,
        DASHBOARD,
        DashCancelJobPage,
    ),
    route(
        "POST",
        "/dashboard/jobs/{id}/cancel",
        Session,
        DASHBOARD,
        DashCancelJob,
    ),
    route("GET", "/dashboard/support", Session, DASHBOARD, DashSupport),
];

/// The function serving the dashboard's pages.
pub const DASHBOARD: &str = "dashboard";

/// The routes of the JSON API (what the OpenAPI document describes).
pub fn api_routes() -> impl Iterator<Item = &'static Route> {
    ROUTES.iter().filter(|r| r.is_api())
}

/// A request matched to its route, with the path parameters filled in.
#[derive(Debug, Clone)]
pub struct Matched {
    pub route: &'static Route,
    pub params: HashMap<String, String>,
}

impl Matched {
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Matches a template against a concrete path; returns the parameters on success.
fn match_template(template: &str, path: &str) -> Option<HashMap<String, String>> {
    let mut params = HashMap::new();
    let mut t = template.trim_matches('/').split('/');
    let mut p = path
        .trim_end_matches('/')
        .trim_start_matches('/')
        .split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) => {
                if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    if ps.is_empty() {
                        return None;
                    }
                    params.insert(name.to_string(), ps.to_string());
                } else if ts != ps {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// Finds the route for `method path`: unknown path → 404, known path with another method → 405.
/// `HEAD` is served by the `GET` route (RFC 9110 §9.3.2); the response then has no body.
pub fn match_route(method: &str, path: &str) -> Result<Matched, ApiError> {
    let method = if method.eq_ignore_ascii_case("HEAD") {
        "GET"
    } else {
        method
    };
    let mut path_known = false;
    for route in ROUTES {
        if let Some(params) = match_template(route.path, path) {
            path_known = true;
            if route.method.eq_ignore_ascii_case(method) {
                return Ok(Matched { route, params });
            }
        }
    }
    if path_known {
        let allowed: Vec<&str> = ROUTES
            .iter()
            .filter(|r| match_template(r.path, path).is_some())
            .flat_map(|r| match r.method {
                "GET" => &["GET", "HEAD"][..],
                _ => std::slice::from_ref(&r.method),
            })
            .copied()
            .collect();
        Err(ApiError::MethodNotAllowed {
            allowed: allowed.join(", "),
        })
    } else {
        Err(ApiError::RouteNotFound)
    }
}

/// The `(method, path, function)` routes API Gateway must declare: every route of the table,
/// plus `HEAD` beside every `GET` (an HTTP API matches methods exactly).
pub fn gateway_routes() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    ROUTES.iter().flat_map(|r| {
        let head = (r.method == "GET").then_some(("HEAD", r.path, r.function));
        std::iter::once((r.method, r.path, r.function)).chain(head)
    })
}

/// The routes a given function serves.
pub fn routes_of(function: &str) -> impl Iterator<Item = &'static Route> + '_ {
    ROUTES.iter().filter(move |r| r.function == function)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_parameters_and_methods() {
        let m = match_route("GET", "/jobs/abc").unwrap();
        assert_eq!(m.route.name, GetJob);
        assert_eq!(m.param("id"), "abc");
        assert_eq!(
            match_route("POST", "/jobs/abc/report").unwrap().route.name,
            ReportJob
        );
        assert_eq!(match_route("GET", "/jobs/").unwrap().route.name, ListJobs);
        match match_route("PUT", "/jobs/abc") {
            Err(ApiError::MethodNotAllowed { allowed }) => assert_eq!(allowed, "GET, HEAD, DELETE"),
            other => panic!("{other:?}"),
        }
        assert_eq!(match_route("HEAD", "/jobs/abc").unwrap().route.name, GetJob);
        assert_eq!(
            match_route("head", "/account").unwrap().route.name,
            GetAccount
        );
        match match_route("HEAD", "/jobs/abc/report") {
            Err(ApiError::MethodNotAllowed { allowed }) => assert_eq!(allowed, "POST"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            match_route("GET", "/nope"),
            Err(ApiError::RouteNotFound)
        ));
        assert!(matches!(
            match_route("GET", "/jobs/a/b"),
            Err(ApiError::RouteNotFound)
        ));
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(!(a.method == b.method && a.path == b.path), "{a:?} twice");
                assert_ne!(a.name, b.name);
            }
        }
    }
}
