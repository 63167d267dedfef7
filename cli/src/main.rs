//! `mimiry`: the command line for Mimiry's API. `mimiry run script.sh` submits a job, shows it
//! go queued → provisioning → running, streams its output, and exits with the script's exit
//! code. `--json` prints the API's answers as they are, for scripts.

mod api;
mod config;
mod follow;

use api::{Api, CliError};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "mimiry", version, about = "Run and watch GPU jobs on Mimiry")]
struct Cli {
    /// The API's base URL [default: the config file's api_url, else Mimiry's]
    #[arg(long, env = "MIMIRY_API_URL", global = true)]
    api_url: Option<String>,
    /// Print the API's JSON answers instead of text (for scripts)
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// `--env NAME=value`: split at the first `=` (the API checks the name).
fn env_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not NAME=value"))
}

/// `--retry N:COND,COND…` (e.g. `3:interrupted,exit_code:3`) → the API's `retry` object; the
/// API checks the conditions and names the one at fault.
fn retry_policy(s: &str) -> Result<Value, String> {
    let usage =
        || format!("`{s}` is not ATTEMPTS:CONDITION[,CONDITION…], e.g. 3:interrupted,exit_code:3");
    let (n, on) = s.split_once(':').ok_or_else(usage)?;
    let max_attempts: u32 = n.trim().parse().map_err(|_| usage())?;
    let on: Vec<&str> = on
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if on.is_empty() {
        return Err(usage());
    }
    Ok(json!({ "max_attempts": max_attempts, "on": on }))
}

#[derive(Subcommand)]
enum Command {
    /// Submit a script as a job, follow its output, exit with its exit code
    Run {
        /// The instance type (`mimiry instances`)
        #[arg(long = "type")]
        instance_type: String,
        /// The OS image
        #[arg(long)]
        image: String,
        /// A location code; default: any location with capacity
        #[arg(long)]
        location: Option<String>,
        /// The id of an SSH key of yours to put on the instance (repeatable)
        #[arg(long = "ssh-key")]
        ssh_keys: Vec<String>,
        /// An environment variable of the script, `NAME=value` (repeatable)
        #[arg(long = "env", value_parser = env_pair)]
        env: Vec<(String, String)>,
        /// The name of one of your secrets (`POST /secrets`) to give the script as an
        /// environment variable of that name (repeatable); its value is masked in the output
        #[arg(long = "secret")]
        secrets: Vec<String>,
        /// Retry policy, `ATTEMPTS:CONDITION,…` with conditions no_capacity, instance_error,
        /// instance_lost, interrupted, exit_code:N or exit_code:A-B (e.g. `3:interrupted`)
        #[arg(long, value_parser = retry_policy)]
        retry: Option<Value>,
        /// Run on spot (interruptible) capacity at its lower price, where it is sold
        #[arg(long)]
        spot: bool,
        /// The job's name
        #[arg(long)]
        name: Option<String>,
        /// Stop the job this many seconds after it started running
        #[arg(long)]
        max_runtime: Option<u64>,
        /// Submit and print the job's id without following it
        #[arg(long, short = 'd')]
        detach: bool,
        /// The bash script to run on the instance
        script: PathBuf,
    },
    /// List your jobs, newest first
    Jobs {
        /// Only jobs with this status
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Print a job's log
    Logs {
        /// Follow the log until the job ends
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines (then follow with -f)
        #[arg(long)]
        tail: Option<u32>,
        id: String,
    },
    /// Show one job
    Job { id: String },
    /// Cancel a job (its instance is deleted)
    Cancel { id: String },
    /// List instance types and prices
    Instances,
    /// Your SSH keys
    #[command(subcommand)]
    SshKeys(SshKeys),
    /// Your account and credits
    Account,
}

#[derive(Subcommand)]
enum SshKeys {
    /// Add a public key (e.g. ~/.ssh/id_ed25519.pub)
    Add {
        path: PathBuf,
        /// Its name; default: the key's comment, else the file's name
        #[arg(long)]
        name: Option<String>,
    },
    /// List your SSH keys
    List,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mimiry: {e}");
            match e {
                CliError::Usage(_) | CliError::File { .. } => 2,
                _ => 1,
            }
        }
    };
    std::process::exit(code);
}

fn read(path: &PathBuf) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::File {
        path: path.display().to_string(),
        source,
    })
}

/// Prints `value` as JSON (for `--json`).
fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("a JSON value serializes")
    );
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or("-")
}

async fn run(cli: Cli) -> Result<i32, CliError> {
    let (url, key) = config::resolve(cli.api_url)?;
    let api = Api::new(&url, key);
    let json = cli.json;
    match cli.command {
        Command::Run {
            instance_type,
            image,
            location,
            ssh_keys,
            env,
            secrets,
            retry,
            spot,
            name,
            max_runtime,
            detach,
            script,
        } => {
            let env: serde_json::Map<String, serde_json::Value> =
                env.into_iter().map(|(k, v)| (k, v.into())).collect();
            let mut body = json!({
                "env": env,
                "secrets": secrets,
                "instance_type": instance_type,
                "image": image,
                "location": location,
                "ssh_key_ids": ssh_keys,
                "name": name,
                "max_runtime_seconds": max_runtime,
                "startup_script": read(&script)?,
                "auto_shutdown": true,
            });
            if let Some(retry) = retry {
                body["retry"] = retry;
            }
            if spot {
                body["spot"] = json!(true);
            }
            let job = api.post("/jobs", &body).await?;
            let id = text(&job, "id").to_string();
            if detach {
                if json {
                    print_json(&job);
                } else {
                    println!("{id}");
                }
                return Ok(0);
            }
            eprintln!("job {id} submitted ({})", text(&job, "name"));
            match follow::follow(&api, &id, None, json, true).await? {
                Some(job) => {
                    if json {
                        print_json(&job);
                    }
                    Ok(follow::exit_code(&job))
                }
                None => Ok(130),
            }
        }
        Command::Logs { follow, tail, id } => {
            if follow {
                return Ok(match follow::follow(&api, &id, tail, false, false).await? {
                    Some(_) => 0,
                    None => 130,
                });
            }
            print_log(&api, &id, tail, json).await.map(|()| 0)
        }
        Command::Jobs { status, limit } => {
            let mut path = format!("/jobs?limit={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            let page = api.get(&path).await?;
            if json {
                print_json(&page);
            } else {
                println!(
                    "{:<36}  {:<20}  {:<12}  {:<10}  {:<4}  CREATED",
                    "ID", "NAME", "STATUS", "TYPE", "EXIT"
                );
                for j in page["jobs"].as_array().into_iter().flatten() {
                    println!(
                        "{:<36}  {:<20}  {:<12}  {:<10}  {:<4}  {}",
                        text(j, "id"),
                        text(j, "name"),
                        text(j, "status"),
                        text(j, "instance_type"),
                        j["exit_code"]
                            .as_i64()
                            .map_or("-".into(), |c| c.to_string()),
                        text(j, "created_at"),
                    );
                }
            }
            Ok(0)
        }
        Command::Job { id } => {
            let job = api.get(&format!("/jobs/{id}")).await?;
            print_json(&job);
            Ok(0)
        }
        Command::Cancel { id } => {
            let job = api.delete(&format!("/jobs/{id}")).await?;
            if json {
                print_json(&job);
            } else if job["status"] == "cancelled" {
                println!("job {id} cancelled");
            } else {
                println!("job {id}: cancel requested; its instance is being deleted");
            }
            Ok(0)
        }
        Command::Instances => {
            let list = api.get("/instances").await?;
            if json {
                print_json(&list);
            } else {
                println!("{:<14}  {:>10}  DESCRIPTION", "TYPE", "PER HOUR");
                for i in list["instances"].as_array().into_iter().flatten() {
                    println!(
                        "{:<14}  {:>10}  {}",
                        text(i, "instance_type"),
                        format!("{} {}", text(i, "price_per_hour"), text(i, "currency")),
                        text(i, "description"),
                    );
                }
            }
            Ok(0)
        }
        Command::SshKeys(SshKeys::Add { path, name }) => {
            let public_key = read(&path)?.trim().to_string();
            let name = name.unwrap_or_else(|| default_key_name(&public_key, &path));
            let key = api
                .post(
                    "/ssh-keys",
                    &json!({ "name": name, "public_key": public_key }),
                )
                .await?;
            if json {
                print_json(&key);
            } else {
                println!(
                    "{}  {}  {}",
                    text(&key, "id"),
                    text(&key, "name"),
                    text(&key, "fingerprint")
                );
            }
            Ok(0)
        }
        Command::SshKeys(SshKeys::List) => {
            let list = api.get("/ssh-keys?limit=100").await?;
            if json {
                print_json(&list);
            } else {
                for k in list["ssh_keys"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}  {}",
                        text(k, "id"),
                        text(k, "name"),
                        text(k, "fingerprint")
                    );
                }
            }
            Ok(0)
        }
        Command::Account => {
            let account = api.get("/account").await?;
            if json {
                print_json(&account);
            } else {
                println!("account  {}", text(&account, "account_id"));
                println!("name     {}", text(&account, "name"));
                println!(
                    "balance  {} {}",
                    text(&account, "balance"),
                    text(&account, "currency")
                );
                println!(
                    "held     {} {}",
                    text(&account, "held_credits"),
                    text(&account, "currency")
                );
            }
            Ok(0)
        }
    }
}

/// The log as stored now, a page at a time (or its last `tail` lines).
async fn print_log(api: &Api, id: &str, tail: Option<u32>, json: bool) -> Result<(), CliError> {
    let mut query = match tail {
        Some(n) => format!("tail={n}"),
        None => "limit=10000".to_string(),
    };
    let mut all = Vec::new();
    // At most the 10 MiB cap's worth of pages.
    for _ in 0..10_000 {
        let page = api.get(&format!("/jobs/{id}/logs?{query}")).await?;
        let lines = page["lines"].as_array().cloned().unwrap_or_default();
        let done = lines.is_empty() || tail.is_some() || page["complete"] == true;
        if json {
            all.extend(lines);
        } else {
            for l in &lines {
                println!("{}", l.as_str().unwrap_or(""));
            }
        }
        if done {
            break;
        }
        query = format!(
            "after={}&limit=10000",
            page["next_cursor"].as_str().unwrap_or("")
        );
    }
    if json {
        print_json(&json!({ "job_id": id, "lines": all }));
    }
    Ok(())
}

/// An SSH public key's comment (`ssh-ed25519 AAAA… me@laptop` → `me@laptop`), else the file's
/// name without `.pub`.
fn default_key_name(public_key: &str, path: &std::path::Path) -> String {
    public_key
        .split_whitespace()
        .nth(2)
        .map(str::to_string)
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "ssh-key".into())
        })
        .chars()
        .take(64)
        .collect()
}

#[cfg(test)]
mod retry_flag_tests {
    use super::*;

    #[test]
    fn the_retry_flag_becomes_the_apis_policy() {
        assert_eq!(
            retry_policy("3:interrupted,exit_code:3").unwrap(),
            json!({ "max_attempts": 3, "on": ["interrupted", "exit_code:3"] })
        );
        assert_eq!(
            retry_policy("2:exit_code:1-5").unwrap(),
            json!({ "max_attempts": 2, "on": ["exit_code:1-5"] })
        );
        for bad in ["interrupted", "x:interrupted", "3:", "3:,"] {
            assert!(retry_policy(bad).is_err(), "{bad}");
        }
    }
}
