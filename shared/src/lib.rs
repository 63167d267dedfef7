//! `mimiry-shared`: what every Mimiry function shares.
//!
//! - [`config`], [`aws`], [`logging`]: set up once per process in `main`.
//! - [`http`], [`routes`], [`error`], [`auth`]: the request boundary (route → key → scope →
//!   handler → one error type rendered in one place).
//! - [`store`]: DynamoDB items (accounts, keys, SSH keys, jobs, idempotency, ledger).
//! - [`money`], [`time`]: exact credits and timestamps.

pub mod auth;
pub mod aws;
pub mod billing;
pub mod catalog;
pub mod chaos;
pub mod config;
pub mod error;
pub mod http;
pub mod identity;
pub mod jobs;
pub mod lambda;
pub mod logging;
pub mod money;
pub mod names;
pub mod notices;
pub mod provider;
pub mod queue;
pub mod routes;
pub mod secrets;
pub mod ssh_key;
pub mod ssh_keys;
pub mod store;
pub mod time;
pub mod tls;
pub mod webhooks;
pub mod wiring;

pub use error::ApiError;
