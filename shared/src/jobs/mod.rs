//! Batch jobs: the stored model, the pure lifecycle, the per-job report token and the wrapper
//! around the user's startup script.

pub mod cancel;
pub mod env;
pub mod lifecycle;
pub mod logs;
pub mod model;
pub mod report_token;
pub mod retry;
pub mod wrapper;

#[cfg(test)]
mod lifecycle_tests;

pub use model::{FailureReason, Job, JobStatus, Outcome, Report};
