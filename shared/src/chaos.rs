//! Crash injection for the chaos test: with `MIMIRY_TEST_CRASH_PERCENT=N` (0 when unset, as in
//! every deployment), each [`point`] fails with that probability, as if the process died there.
//! The failure propagates like any error: the SQS message is retried, the in-memory state lost.

use crate::error::ApiError;
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static CRASHES: AtomicU64 = AtomicU64::new(0);

/// Simulated crashes so far in this process.
pub fn crashes() -> u64 {
    CRASHES.load(Ordering::Relaxed)
}

fn percent() -> u32 {
    static PERCENT: OnceLock<u32> = OnceLock::new();
    *PERCENT.get_or_init(|| {
        std::env::var("MIMIRY_TEST_CRASH_PERCENT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            .min(100)
    })
}

/// A place between two steps where a real process could die.
pub fn point(name: &'static str) -> Result<(), ApiError> {
    let p = percent();
    if p > 0 && rand::thread_rng().gen_range(0..100) < p {
        CRASHES.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(point = name, "simulated crash");
        return Err(ApiError::Internal(format!("simulated crash at {name}")));
    }
    Ok(())
}
