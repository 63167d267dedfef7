//! Operator CLI: accounts, keys, credits and links between people and accounts. Works against
//! the local stack (`AWS_ENDPOINT_URL` → moto) and against real AWS with ordinary credentials.

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};
use mimiry_infra::bootstrap::{bootstrap, create_verified_user, find_identity, Identity, Names};
use mimiry_infra::template::Template;
use mimiry_shared::auth::Scope;
use mimiry_shared::aws::{secret_string, AwsClients};
use mimiry_shared::jobs::report_token;
use mimiry_shared::money::Micros;
use mimiry_shared::store::accounts::Account;
use mimiry_shared::store::Store;
use mimiry_shared::time::rfc3339;

#[derive(Parser)]
#[command(
    name = "mimiry-admin",
    about = "Operate Mimiry accounts, API keys and credits"
)]
struct Cli {
    /// DynamoDB table.
    #[arg(long, env = "TABLE_NAME", default_value = "mimiry", global = true)]
    table: String,
    #[command(subcommand)]
    command: Command,
}

/// Names and local credentials of what `bootstrap` creates (boxed in [`Command`]: it is by far
/// the largest variant).
#[derive(clap::Args)]
struct BootstrapArgs {
    #[arg(long, env = "JOBS_QUEUE_NAME", default_value = "mimiry-jobs")]
    queue: String,
    #[arg(
        long,
        env = "PROVIDER_SECRET_ID",
        default_value = "mimiry/provider/datacrunch"
    )]
    provider_secret: String,
    #[arg(
        long,
        env = "LAMBDA_CLOUD_SECRET_ID",
        default_value = "mimiry/provider/lambda"
    )]
    lambda_secret: String,
    /// The API key the local fake Lambda Cloud accepts (`fake-lambda --api-key`).
    #[arg(long, default_value = "mimiry-local-lambda-key")]
    lambda_api_key: String,
    #[arg(
        long,
        env = "REPORT_SECRET_ID",
        default_value = "mimiry/report-signing-key"
    )]
    report_secret: String,
    #[arg(
        long,
        env = "SESSION_SECRET_ID",
        default_value = "mimiry/dashboard-session-key"
    )]
    session_secret: String,
    #[arg(long, default_value = "mimiry-local")]
    provider_client_id: String,
    #[arg(long, default_value = "local-secret")]
    provider_client_secret: String,
    #[arg(long, env = "STRIPE_SECRET_ID", default_value = "mimiry/stripe")]
    stripe_secret: String,
    /// The Stripe secret key the local fake Stripe accepts (`fake-stripe --api-key`).
    #[arg(long, default_value = "sk_test_mimiry_local")]
    stripe_api_key: String,
    /// The webhook signing secret the local fake Stripe signs with.
    #[arg(long, default_value = "whsec_mimiry_local")]
    stripe_webhook_secret: String,
    /// The sender of email notices, verified in SES (moto) so that it may send.
    #[arg(long, env = "NOTICE_FROM_EMAIL")]
    notice_from: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Create the table, queues and secrets of template.yaml (local stack only).
    Bootstrap(Box<BootstrapArgs>),
    /// Create an account; prints its id alone on the last line.
    CreateAccount {
        #[arg(long)]
        name: String,
    },
    /// Create an API key; prints the key once, alone on the last line.
    CreateKey {
        #[arg(long)]
        account: String,
        #[arg(long)]
        name: String,
        /// Comma-separated scopes, or `all`. Empty: a key that can only call GET /account.
        #[arg(long, default_value = "all")]
        scopes: String,
    },
    /// List an account's keys (never the keys themselves).
    ListKeys {
        #[arg(long)]
        account: String,
    },
    /// Revoke a key by its id.
    RevokeKey {
        #[arg(long)]
        account: String,
        #[arg(long)]
        key_id: String,
    },
    /// Add credits (decimal, e.g. 100 or 12.50); writes a ledger entry in the same transaction.
    AddCredits {
        #[arg(long)]
        account: String,
        #[arg(long)]
        amount: String,
        #[arg(long, default_value = "added by operator")]
        note: String,
    },
    /// Show an account's balance, held credits and ledger.
    ShowAccount {
        #[arg(long)]
        account: String,
    },
    /// Link an existing account to a person's email: whoever signs in to the dashboard with
    /// that (verified) email opens this account, also if they had an account of their own.
    LinkUser {
        #[arg(long)]
        account: String,
        #[arg(long)]
        email: String,
    },
    /// Create a dashboard login with a verified email and a permanent password in the user
    /// pool (`COGNITO_USER_POOL_ID`, else the template's pool found by name), optionally
    /// linked to `--account` (the local demo login).
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long, env = "MIMIRY_USER_PASSWORD")]
        password: String,
        #[arg(long)]
        account: Option<String>,
    },
    /// Print the report token of a job (what its instance presents to POST /jobs/{id}/report),
    /// alone on the last line: for reporting by hand for a job whose instance cannot, and for
    /// fuzzing the report route (infra/fuzz.sh).
    ReportToken {
        #[arg(long)]
        account: String,
        #[arg(long)]
        job: String,
        #[arg(
            long,
            env = "REPORT_SECRET_ID",
            default_value = "mimiry/report-signing-key"
        )]
        report_secret: String,
    },
}

fn parse_scopes(s: &str) -> Result<Vec<Scope>> {
    if s.trim() == "all" {
        return Ok(Scope::ALL.to_vec());
    }
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<Scope>().map_err(|e| anyhow!(e)))
        .collect()
}

fn print_account(a: &Account) {
    println!("account_id: {}", a.account_id);
    println!("name:       {}", a.name);
    println!("balance:    {}", Micros(a.balance_micros));
    println!("held:       {}", Micros(a.held_micros));
    println!("charged:    {}", Micros(a.charged_micros));
    println!("added:      {}", Micros(a.added_micros));
}

#[tokio::main]
async fn main() -> Result<()> {
    // `mimiry-admin … | head` must end quietly when the reader goes away: Rust ignores SIGPIPE,
    // so `println!` would panic on the broken pipe. Dying of SIGPIPE, as Unix tools do, is the
    // quiet ending. Sockets are unaffected (Rust sends with MSG_NOSIGNAL).
    // SAFETY: restores the default disposition before any thread or I/O exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let clients = AwsClients::from_env().await;
    let store = Store::new(clients.dynamodb.clone(), cli.table.clone());
    match cli.command {
        Command::Bootstrap(args) => {
            let BootstrapArgs {
                queue,
                provider_secret,
                lambda_secret,
                lambda_api_key,
                report_secret,
                session_secret,
                provider_client_id,
                provider_client_secret,
                stripe_secret,
                stripe_api_key,
                stripe_webhook_secret,
                notice_from,
            } = *args;
            let template = Template::find()?;
            let names = Names {
                notice_from: notice_from.filter(|f| !f.trim().is_empty()),
                table: cli.table.clone(),
                dead_letter_queue: format!("{queue}-dlq"),
                queue,
                provider_secret,
                lambda_secret,
                report_secret,
                stripe_secret,
                session_secret,
            };
            let credentials = serde_json::json!({
                "client_id": provider_client_id,
                "client_secret": provider_client_secret,
            })
            .to_string();
            let lambda_credentials = serde_json::json!({ "api_key": lambda_api_key }).to_string();
            let signing_key = mimiry_shared::auth::ApiKey::generate().hash();
            let stripe_keys = serde_json::json!({
                "api_key": stripe_api_key,
                "webhook_secret": stripe_webhook_secret,
            })
            .to_string();
            let created = bootstrap(
                &clients,
                &template,
                &names,
                &credentials,
                &lambda_credentials,
                &signing_key,
                &stripe_keys,
            )
            .await?;
            println!("table: {}", names.table);
            println!("dead-letter queue: {}", created.dead_letter_queue_url);
            println!("user pool: {}", created.identity.user_pool_id);
            println!("app client: {}", created.identity.client_id);
            println!("{}", created.queue_url);
        }
        Command::CreateAccount { name } => {
            let account = store.create_account(&name).await?;
            println!("{}", account.account_id);
        }
        Command::CreateKey {
            account,
            name,
            scopes,
        } => {
            let scopes = parse_scopes(&scopes)?;
            let (key, record) = store.create_key(&account, &name, scopes).await?;
            println!("key_id: {}", record.key_id);
            println!(
                "scopes: {}",
                record
                    .scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            println!("Copy the key now: it is shown only once.");
            println!("{}", key.expose());
        }
        Command::ListKeys { account } => {
            for k in store.list_keys(&account).await? {
                println!(
                    "{}  {}  {}…  [{}]  created {}  last used {}  {}",
                    k.key_id,
                    k.name,
                    k.prefix,
                    k.scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    rfc3339(k.created_at),
                    k.last_used_at
                        .map(rfc3339)
                        .unwrap_or_else(|| "never".into()),
                    if k.revoked_at.is_some() {
                        "REVOKED"
                    } else {
                        "active"
                    },
                );
            }
        }
        Command::RevokeKey { account, key_id } => {
            let k = store.revoke_key(&account, &key_id).await?;
            println!("revoked {} ({})", k.key_id, k.name);
        }
        Command::AddCredits {
            account,
            amount,
            note,
        } => {
            let amount = Micros::parse_decimal(&amount).map_err(|e| anyhow!("--amount: {e}"))?;
            let a = store.add_credits(&account, amount, &note).await?;
            print_account(&a);
        }
        Command::ShowAccount { account } => {
            let a = store
                .get_account(&account)
                .await?
                .ok_or_else(|| anyhow!("no account {account}"))?;
            print_account(&a);
            for e in store.ledger(&account).await? {
                println!(
                    "{}  {:<8} {:>14}  {}  {}",
                    rfc3339(e.at),
                    e.kind,
                    Micros(e.amount_micros).to_string(),
                    e.job_id.as_deref().unwrap_or("-"),
                    e.note
                );
            }
        }
        Command::LinkUser { account, email } => {
            let link = store.link_email(&account, &email).await?;
            println!("{} now opens account {}", link.email, link.account_id);
        }
        Command::CreateUser {
            email,
            password,
            account,
        } => {
            let template = Template::find()?;
            let identity = match std::env::var("COGNITO_USER_POOL_ID") {
                Ok(pool) if !pool.is_empty() => Identity {
                    user_pool_id: pool,
                    client_id: String::new(),
                },
                _ => find_identity(&clients, &template)
                    .await?
                    .ok_or_else(|| anyhow!("no user pool: run bootstrap first"))?,
            };
            create_verified_user(&clients, &identity, &email, &password).await?;
            if let Some(account) = account {
                store.link_email(&account, &email).await?;
            }
            println!("{email} can log in to the dashboard");
        }
        Command::ReportToken {
            account,
            job,
            report_secret,
        } => {
            // A token for a job that does not exist would be useless: say so instead.
            store
                .get_job(&account, &job)
                .await?
                .ok_or_else(|| anyhow!("no job {job} in account {account}"))?;
            let key = secret_string(&clients.secrets, &report_secret)
                .await
                .map_err(|e| anyhow!(e))?;
            println!("{}", report_token::issue(key.as_bytes(), &account, &job));
        }
    }
    Ok(())
}
