//! Signed-in pages: Home, API keys, SSH keys, jobs, Support, Log out (buying credits and
//! billing: `credits.rs`). Each is parse → the signed-in account → the shared domain → a
//! page; every query is keyed by the session's account, so another account's id is simply
//! not found.

use crate::views::*;
use crate::web::{DashError, Flash, Out, Req};
use crate::{page, App, Visitor};
use http::StatusCode;
use mimiry_shared::auth::Scope;
use mimiry_shared::error::ApiError;
use mimiry_shared::jobs::cancel::{cancel, Cancelled};
use mimiry_shared::jobs::logs::{
    read as read_log, LogQuery, Position, DEFAULT_LINES, MAX_WAIT_SECS,
};
use mimiry_shared::jobs::JobStatus;
use mimiry_shared::names::DisplayName;
use mimiry_shared::routes::RouteName;
use mimiry_shared::secrets::{self, EnvName, SecretValue};
use mimiry_shared::ssh_key::SshPublicKey;
use mimiry_shared::ssh_keys;
use mimiry_shared::store::accounts::Account;
use mimiry_shared::time::now_ms;

/// Jobs on the Jobs page, and on Home.
const JOBS_PER_PAGE: usize = 20;
const RECENT_JOBS: usize = 5;
const SSH_KEYS_PER_PAGE: usize = 50;
/// Log lines a job's page shows (app.js appends the ones that follow).
const LOG_LINES_SHOWN: usize = 200;

/// The signed-in person's account (for every query and the header's balance).
pub(crate) struct Me {
    pub account: Account,
}

impl Me {
    pub fn id(&self) -> &str {
        &self.account.account_id
    }
}

pub(crate) async fn me(app: &App, v: &Visitor) -> Result<Me, DashError> {
    let session = v.session.as_ref().ok_or(DashError::SignInRequired)?;
    let account = app
        .store
        .get_account(&session.account_id)
        .await?
        .ok_or(DashError::SignInRequired)?;
    Ok(Me { account })
}

pub async fn handle(app: &App, req: &Req, v: &Visitor, name: RouteName) -> Result<Out, DashError> {
    use RouteName::*;
    let me = me(app, v).await?;
    let chrome = |title, nav| v.chrome(title, nav, Some(&me.account));
    match name {
        DashHome => {
            let jobs = app
                .store
                .list_jobs(me.id(), None, RECENT_JOBS, None)
                .await?;
            let now = now_ms();
            Ok(page(
                StatusCode::OK,
                &HomePage {
                    c: chrome("Dashboard", "home"),
                    balance: Amount::of(me.account.balance_micros),
                    held: Amount::of(me.account.held_micros),
                    jobs: jobs.jobs.iter().map(|j| JobRow::of(j, now)).collect(),
                },
            ))
        }
        DashCredits => Ok(crate::credits::page_of(
            app,
            chrome("Add Credits", "billing"),
            req,
            "",
            StatusCode::OK,
        )),
        DashBuyCredits => {
            crate::credits::buy(app, req, &me, chrome("Add Credits", "billing")).await
        }
        DashCreditsSuccess => {
            crate::credits::success(app, req, &me, chrome("Payment received", "billing")).await
        }
        DashBilling => crate::credits::billing(app, req, &me, chrome("Billing", "billing")).await,
        DashBillingCsv => crate::credits::billing_csv(app, &me).await,
        DashBudgets => {
            crate::budgets::show(app, &me, chrome("Budgets", "budgets"), None, StatusCode::OK).await
        }
        DashSaveBudgets => {
            crate::budgets::save(app, req, v, &me, chrome("Budgets", "budgets")).await
        }
        DashSupport => Ok(page(
            StatusCode::OK,
            &SupportPage {
                c: chrome("Support", "support"),
            },
        )),
        DashLogOutPage => Ok(page(
            StatusCode::OK,
            &LogOutPage {
                c: chrome("Log out", ""),
            },
        )),
        DashApiKeys => {
            let keys = app.store.list_keys(me.id()).await?;
            Ok(page(
                StatusCode::OK,
                &ApiKeysPage {
                    c: chrome("API Keys", "api-keys"),
                    keys: keys.iter().rev().map(KeyRow::of).collect(),
                },
            ))
        }
        DashNewApiKey => Ok(new_key_page(
            chrome("Create API Key", "api-keys"),
            "",
            &[],
            StatusCode::OK,
        )),
        DashCreateApiKey => create_key(app, req, &me, chrome("Create API Key", "api-keys")).await,
        DashRevokeApiKeyPage => {
            let key = find_key(app, &me, req.param("id")).await?;
            Ok(page(
                StatusCode::OK,
                &RevokeApiKeyPage {
                    c: chrome("Revoke API key", "api-keys"),
                    key,
                },
            ))
        }
        DashRevokeApiKey => {
            let id = uuid_param(req, "API key")?;
            app.store.revoke_key(me.id(), &id).await?;
            Ok(Out::redirect("/dashboard/api-keys").flash(Flash::KeyRevoked, v.secure))
        }
        DashSshKeys => {
            let page_of = app
                .store
                .list_ssh_keys(me.id(), SSH_KEYS_PER_PAGE, req.query("cursor"))
                .await?;
            Ok(page(
                StatusCode::OK,
                &SshKeysPage {
                    c: chrome("SSH Keys", "ssh-keys"),
                    keys: page_of.keys.iter().map(SshKeyRow::of).collect(),
                    next_cursor: page_of.next_cursor.map(|cursor| {
                        form_urlencoded::Serializer::new(String::new())
                            .append_pair("cursor", &cursor)
                            .finish()
                    }),
                },
            ))
        }
        DashNewSshKey => Ok(page(
            StatusCode::OK,
            &NewSshKeyPage {
                c: chrome("Add SSH Key", "ssh-keys"),
                name: String::new(),
                public_key: String::new(),
            },
        )),
        DashAddSshKey => add_ssh_key(app, req, v, &me, chrome("Add SSH Key", "ssh-keys")).await,
        DashDeleteSshKeyPage => {
            let id = uuid_param(req, "SSH key")?;
            let key = app
                .store
                .get_ssh_key(me.id(), &id)
                .await?
                .ok_or(ApiError::NotFound("SSH key"))?;
            Ok(page(
                StatusCode::OK,
                &DeleteSshKeyPage {
                    c: chrome("Delete SSH key", "ssh-keys"),
                    key: SshKeyRow::of(&key),
                },
            ))
        }
        DashDeleteSshKey => {
            let (provider, providers) = (app.provider.as_ref(), &app.providers);
            ssh_keys::delete(&app.store, provider, providers, me.id(), req.param("id")).await?;
            Ok(Out::redirect("/dashboard/ssh-keys").flash(Flash::SshKeyDeleted, v.secure))
        }
        DashWebhooks
        | DashNewWebhook
        | DashAddWebhook
        | DashWebhook
        | DashDeleteWebhookPage
        | DashDeleteWebhook => {
            crate::webhooks::handle(app, req, v, me.id(), chrome("Webhooks", "webhooks"), name)
                .await
        }
        DashSecrets => {
            secrets_page(app, &me, chrome("Secrets", "secrets"), "", StatusCode::OK).await
        }
        DashAddSecret => add_secret(app, req, v, &me, chrome("Secrets", "secrets")).await,
        DashDeleteSecretPage => {
            let name = EnvName::parse("name", req.param("name"))
                .map_err(|_| ApiError::NotFound("Secret"))?;
            app.store
                .get_secret(me.id(), &name)
                .await?
                .ok_or(ApiError::NotFound("Secret"))?;
            Ok(page(
                StatusCode::OK,
                &DeleteSecretPage {
                    c: chrome("Delete secret", "secrets"),
                    name: name.to_string(),
                },
            ))
        }
        DashDeleteSecret => {
            secrets::delete(&app.store, me.id(), req.param("name")).await?;
            Ok(Out::redirect("/dashboard/secrets").flash(Flash::SecretDeleted, v.secure))
        }
        DashJobs => jobs(app, req, &me, chrome("Jobs", "jobs")).await,
        DashJob => {
            let job = find_job(app, &me, req).await?;
            let tail = read_log(
                &app.store,
                me.id(),
                &job.job_id,
                LogQuery {
                    tail: Some(LOG_LINES_SHOWN),
                    limit: LOG_LINES_SHOWN,
                    ..LogQuery::default()
                },
            )
            .await?;
            let log = LogView {
                lines: tail.page.lines.join("\n"),
                next_cursor: tail.page.next.to_cursor(),
                truncated: tail.page.truncated,
            };
            Ok(page(
                StatusCode::OK,
                &JobPage::of(chrome("Job", "jobs"), &job, log, now_ms()),
            ))
        }
        DashJobLogs => job_logs(app, req, &me).await,
        DashCancelJobPage => {
            let job = find_job(app, &me, req).await?;
            Ok(page(
                StatusCode::OK,
                &CancelJobPage {
                    c: chrome("Cancel job", "jobs"),
                    job: JobRow::of(&job, now_ms()),
                },
            ))
        }
        DashCancelJob => {
            let id = uuid_param(req, "Job")?;
            let flash = match cancel(&app.store, &app.queue, &app.webhooks, me.id(), &id).await? {
                Cancelled::Now(_) => Flash::Cancelled,
                Cancelled::Requested(_) => Flash::CancelRequested,
            };
            Ok(Out::redirect(format!("/dashboard/jobs/{id}")).flash(flash, v.secure))
        }
        _ => Err(DashError::Api(ApiError::RouteNotFound)),
    }
}

/// The log lines app.js asks for while it follows a job's page: the API's reader
/// (`GET /jobs/{id}/logs`), for the session's account only, as the same JSON.
async fn job_logs(app: &App, req: &Req, me: &Me) -> Result<Out, DashError> {
    let id = uuid_param(req, "Job")?;
    let after = req.query("after").map(Position::from_cursor).transpose()?;
    let wait_secs = match req.query("wait") {
        None => 0,
        Some(w) => w
            .parse::<u64>()
            .ok()
            .filter(|w| *w <= MAX_WAIT_SECS)
            .ok_or_else(|| {
                ApiError::validation("wait", format!("wait must be from 0 to {MAX_WAIT_SECS}"))
            })?,
    };
    let answer = read_log(
        &app.store,
        me.id(),
        &id,
        LogQuery {
            after,
            tail: None,
            limit: DEFAULT_LINES,
            wait_secs,
        },
    )
    .await?;
    let mut out = Out::html(StatusCode::OK, answer.to_json(&id).to_string());
    out.content_type = "application/json";
    Ok(out)
}

/// An `{id}` path parameter that must be a UUID; anything else cannot exist.
fn uuid_param(req: &Req, what: &'static str) -> Result<String, DashError> {
    let id = req.param("id");
    uuid::Uuid::parse_str(id).map_err(|_| ApiError::NotFound(what))?;
    Ok(id.to_string())
}

async fn find_key(app: &App, me: &Me, id: &str) -> Result<KeyRow, DashError> {
    app.store
        .list_keys(me.id())
        .await?
        .iter()
        .find(|k| k.key_id == id && k.revoked_at.is_none())
        .map(KeyRow::of)
        .ok_or(DashError::Api(ApiError::NotFound("API key")))
}

async fn find_job(app: &App, me: &Me, req: &Req) -> Result<mimiry_shared::jobs::Job, DashError> {
    let id = uuid_param(req, "Job")?;
    Ok(app
        .store
        .get_job(me.id(), &id)
        .await?
        .ok_or(ApiError::NotFound("Job"))?)
}

/// What each scope allows, as the guide's §3 says it.
fn scope_help(scope: Scope) -> &'static str {
    match scope {
        Scope::JobsRead => "view your batch jobs",
        Scope::JobsWrite => "create and cancel batch jobs",
        Scope::InstancesRead => "view available GPU types",
        Scope::SshKeysRead => "view your SSH keys",
        Scope::SshKeysWrite => "add and delete SSH keys",
        Scope::WebhooksRead => "view your webhook endpoints and their deliveries",
        Scope::WebhooksWrite => "add and delete webhook endpoints",
        Scope::SecretsRead => "list your secrets' names",
        Scope::SecretsWrite => "add, replace and delete secrets",
    }
}

fn new_key_page(mut c: Chrome, name: &str, checked: &[Scope], status: StatusCode) -> Out {
    if status != StatusCode::OK && c.error.is_none() {
        c.error = Some("Please check the form.".into());
    }
    let scopes = Scope::ALL
        .iter()
        .map(|&s| ScopeBox {
            value: s.as_str(),
            id: format!("scope-{}", s.as_str().replace(':', "-")),
            help: scope_help(s),
            checked: checked.contains(&s),
        })
        .collect();
    page(
        status,
        &NewApiKeyPage {
            c,
            name: name.to_string(),
            scopes,
        },
    )
}

/// Creates the key and shows it — in this answer only: it is never stored, logged, put in a
/// cookie or a redirect, and the page is `no-store`.
async fn create_key(app: &App, req: &Req, me: &Me, mut c: Chrome) -> Result<Out, DashError> {
    let raw_name = req.field("name");
    let scopes: Result<Vec<Scope>, String> =
        req.fields("scopes").into_iter().map(str::parse).collect();
    let problem = match (DisplayName::parse("name", raw_name), &scopes) {
        (Err(e), _) => Some(e.to_string()),
        (_, Err(e)) => Some(e.clone()),
        (_, Ok(s)) if s.is_empty() => Some("Choose at least one scope.".to_string()),
        _ => None,
    };
    let checked = scopes.clone().unwrap_or_default();
    if let Some(message) = problem {
        c.error = Some(message);
        return Ok(new_key_page(c, raw_name, &checked, StatusCode::BAD_REQUEST));
    }
    let name = DisplayName::parse("name", raw_name)?;
    let (key, record) = app
        .store
        .create_key(me.id(), name.as_str(), checked)
        .await?;
    c.title = "Your new API key";
    Ok(page(
        StatusCode::OK,
        &CreatedApiKeyPage {
            c,
            name: record.name.clone(),
            key: key.expose().to_string(),
            scopes: KeyRow::of(&record).scopes,
        },
    ))
}

/// `POST /ssh-keys`'s checks and messages, through the same shared code.
async fn secrets_page(
    app: &App,
    me: &Me,
    c: Chrome,
    name: &str,
    status: StatusCode,
) -> Result<Out, DashError> {
    let list = app.store.list_secrets(me.id()).await?;
    Ok(page(
        status,
        &SecretsPage {
            c,
            secrets: list.iter().map(SecretRow::of).collect(),
            name: name.to_string(),
        },
    ))
}

/// The Secrets page's form: the API's rules and messages (`secrets::put`); a refused form
/// comes back with the name, never the value.
async fn add_secret(
    app: &App,
    req: &Req,
    v: &Visitor,
    me: &Me,
    mut c: Chrome,
) -> Result<Out, DashError> {
    let raw_name = req.field("name");
    let parsed = EnvName::parse("name", raw_name)
        .and_then(|name| SecretValue::parse(req.raw_field("value").to_string()).map(|v| (name, v)));
    let result = match parsed {
        Ok((name, value)) => secrets::put(&app.store, &app.vault, me.id(), name, &value)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(Out::redirect("/dashboard/secrets").flash(Flash::SecretSaved, v.secure)),
        Err(e @ ApiError::Internal(_)) => Err(e.into()),
        Err(e) => {
            c.error = Some(e.to_string());
            secrets_page(app, me, c, raw_name, e.status()).await
        }
    }
}

async fn add_ssh_key(
    app: &App,
    req: &Req,
    v: &Visitor,
    me: &Me,
    mut c: Chrome,
) -> Result<Out, DashError> {
    let (raw_name, raw_key) = (req.field("name"), req.raw_field("public_key"));
    let again = |mut c: Chrome, message: String, status: StatusCode| {
        c.error = Some(message);
        page(
            status,
            &NewSshKeyPage {
                c,
                name: raw_name.to_string(),
                public_key: raw_key.to_string(),
            },
        )
    };
    let parsed = DisplayName::parse("name", raw_name).and_then(|name| {
        SshPublicKey::parse(raw_key)
            .map(|key| (name, key))
            .map_err(ApiError::from)
    });
    let (name, public_key) = match parsed {
        Ok(p) => p,
        Err(e) => return Ok(again(c, e.to_string(), e.status())),
    };
    match ssh_keys::add(
        &app.store,
        app.provider.as_ref(),
        me.id(),
        name,
        &public_key,
        |_| None,
    )
    .await
    {
        Ok(_) => Ok(Out::redirect("/dashboard/ssh-keys").flash(Flash::SshKeyAdded, v.secure)),
        Err(e @ ApiError::Internal(_)) => Err(e.into()),
        Err(e) => {
            c.title = "Add SSH Key";
            Ok(again(c, e.to_string(), e.status()))
        }
    }
}

async fn jobs(app: &App, req: &Req, me: &Me, c: Chrome) -> Result<Out, DashError> {
    let status = match req.query("status") {
        None => None,
        Some(s) => Some(
            JobStatus::parse(s)
                .ok_or_else(|| DashError::BadRequest(format!("There is no job status `{s}`.")))?,
        ),
    };
    let found = app
        .store
        .list_jobs(me.id(), status, JOBS_PER_PAGE, req.query("cursor"))
        .await?;
    let now = now_ms();
    let next = found.next_cursor.map(|cursor| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(s) = status {
            q.append_pair("status", s.as_str());
        }
        q.append_pair("cursor", &cursor);
        q.finish()
    });
    Ok(page(
        StatusCode::OK,
        &JobsPage {
            c,
            jobs: found.jobs.iter().map(|j| JobRow::of(j, now)).collect(),
            statuses: JobStatus::ALL
                .iter()
                .map(|&s| (s.as_str(), Some(s) == status))
                .collect(),
            next,
            filtered: status.is_some(),
        },
    ))
}
