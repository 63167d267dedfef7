//! A job's retry policy (`retry` on `POST /jobs`, issue 15): how many attempts, and which
//! endings of an attempt start another on a fresh instance. Parsed here, at the boundary, into
//! types that cannot hold an invalid policy; the lifecycle only asks [`RetryPolicy::retries`].

use super::model::FailureReason;
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// At most this many attempts (the first one included).
pub const MAX_ATTEMPTS: u32 = 10;

/// One ending a policy retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RetryOn {
    /// No capacity anywhere the job may go (after the location fail-over).
    NoCapacity,
    /// The instance never came up: it failed to start, or the provisioning timed out, or the
    /// provider kept refusing.
    InstanceError,
    /// The instance vanished or broke while the job ran.
    InstanceLost,
    /// A spot instance was taken back by the provider.
    Interrupted,
    /// The script exited with a code in `from..=to`.
    ExitCode { from: i32, to: i32 },
}

impl RetryOn {
    fn parse(s: &str) -> Option<RetryOn> {
        Some(match s {
            "no_capacity" => RetryOn::NoCapacity,
            "instance_error" => RetryOn::InstanceError,
            "instance_lost" => RetryOn::InstanceLost,
            "interrupted" => RetryOn::Interrupted,
            _ => {
                let codes = s.strip_prefix("exit_code:")?;
                let (from, to) = match codes.split_once('-') {
                    Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                    None => {
                        let n = codes.parse().ok()?;
                        (n, n)
                    }
                };
                // 0 is success (never retried); a shell's codes are 1–255.
                if !(1..=255).contains(&from) || !(from..=255).contains(&to) {
                    return None;
                }
                RetryOn::ExitCode { from, to }
            }
        })
    }

    /// Whether an attempt that ended with `reason` (and, if the script reported, `exit_code`)
    /// is one this names.
    fn matches(self, reason: FailureReason, exit_code: Option<i32>) -> bool {
        match self {
            RetryOn::NoCapacity => reason == FailureReason::NoCapacity,
            RetryOn::InstanceError => matches!(
                reason,
                FailureReason::ProviderError | FailureReason::ProvisioningTimeout
            ),
            RetryOn::InstanceLost => reason == FailureReason::InstanceLost,
            RetryOn::Interrupted => reason == FailureReason::Interrupted,
            RetryOn::ExitCode { from, to } => {
                reason == FailureReason::ScriptFailed
                    && exit_code.is_some_and(|c| (from..=to).contains(&c))
            }
        }
    }
}

impl std::fmt::Display for RetryOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryOn::NoCapacity => f.write_str("no_capacity"),
            RetryOn::InstanceError => f.write_str("instance_error"),
            RetryOn::InstanceLost => f.write_str("instance_lost"),
            RetryOn::Interrupted => f.write_str("interrupted"),
            RetryOn::ExitCode { from, to } if from == to => write!(f, "exit_code:{from}"),
            RetryOn::ExitCode { from, to } => write!(f, "exit_code:{from}-{to}"),
        }
    }
}

impl From<RetryOn> for String {
    fn from(r: RetryOn) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for RetryOn {
    type Error = String;
    fn try_from(s: String) -> Result<RetryOn, String> {
        RetryOn::parse(&s).ok_or_else(|| format!("not a retry condition: {s}"))
    }
}

/// A valid policy: 1–[`MAX_ATTEMPTS`] attempts, at least one condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub on: Vec<RetryOn>,
}

const ON_VALUES: &str = "no_capacity, instance_error, instance_lost, interrupted, exit_code:<n> or exit_code:<a>-<b> (1-255)";

impl RetryPolicy {
    /// The request's `retry` object; anything else is a 400 naming the field at fault
    /// (`retry.max_attempts`, `retry.on[2]`, …).
    pub fn parse(value: &Value) -> Result<RetryPolicy, ApiError> {
        let obj = value.as_object().ok_or_else(|| {
            ApiError::validation(
                "retry",
                "retry must be an object like {\"max_attempts\": 3, \"on\": [\"interrupted\"]}",
            )
        })?;
        if let Some(k) = obj
            .keys()
            .find(|k| !["max_attempts", "on"].contains(&k.as_str()))
        {
            return Err(ApiError::validation(
                format!("retry.{k}"),
                format!("retry.{k} is not a field of retry: it takes max_attempts and on"),
            ));
        }
        let max_attempts = obj
            .get("max_attempts")
            .and_then(Value::as_u64)
            .filter(|n| (1..=u64::from(MAX_ATTEMPTS)).contains(n))
            .ok_or_else(|| {
                ApiError::validation(
                    "retry.max_attempts",
                    format!("retry.max_attempts must be an integer from 1 to {MAX_ATTEMPTS}"),
                )
            })? as u32;
        let list = obj.get("on").and_then(Value::as_array).ok_or_else(|| {
            ApiError::validation(
                "retry.on",
                format!("retry.on must be a list naming at least one of {ON_VALUES}"),
            )
        })?;
        if list.is_empty() {
            return Err(ApiError::validation(
                "retry.on",
                format!("retry.on must name at least one of {ON_VALUES}"),
            ));
        }
        let mut on = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            let field = format!("retry.on[{i}]");
            let parsed = v.as_str().and_then(RetryOn::parse).ok_or_else(|| {
                ApiError::validation(
                    field.as_str(),
                    format!("{field} ({v}) is not one of {ON_VALUES}"),
                )
            })?;
            if !on.contains(&parsed) {
                on.push(parsed);
            }
        }
        Ok(RetryPolicy { max_attempts, on })
    }

    /// Whether attempt number `attempt` (1-based) that ended with `reason` gets another.
    pub fn retries(&self, attempt: u32, reason: FailureReason, exit_code: Option<i32>) -> bool {
        attempt < self.max_attempts && self.on.iter().any(|o| o.matches(reason, exit_code))
    }
}

/// The wait before attempt `next` (2-based: the first retry waits one retry delay), doubling
/// per retry and capped at five minutes: a provider hiccup gets a moment to pass, a
/// deterministic failure does not burn the attempts at once.
pub fn backoff_secs(retry_delay_secs: i64, next: u32) -> i64 {
    let doubling = 1i64 << next.saturating_sub(2).min(10);
    (retry_delay_secs.max(1) * doubling).min(300)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_policy_parses_and_round_trips() {
        let p = RetryPolicy::parse(&json!({"max_attempts": 3,
            "on": ["interrupted", "exit_code:3", "exit_code:10-20", "no_capacity"]}))
        .unwrap();
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.on[1], RetryOn::ExitCode { from: 3, to: 3 });
        assert_eq!(p.on[2], RetryOn::ExitCode { from: 10, to: 20 });
        let stored = serde_json::to_value(&p).unwrap();
        assert_eq!(stored["on"][2], json!("exit_code:10-20"));
        assert_eq!(serde_json::from_value::<RetryPolicy>(stored).unwrap(), p);
    }

    #[test]
    fn a_bad_policy_names_the_field_at_fault() {
        for (bad, field) in [
            (json!([]), "retry"),
            (
                json!({"max_attempts": 0, "on": ["interrupted"]}),
                "retry.max_attempts",
            ),
            (
                json!({"max_attempts": 11, "on": ["interrupted"]}),
                "retry.max_attempts",
            ),
            (
                json!({"max_attempts": "3", "on": ["interrupted"]}),
                "retry.max_attempts",
            ),
            (json!({"max_attempts": 3}), "retry.on"),
            (json!({"max_attempts": 3, "on": []}), "retry.on"),
            (
                json!({"max_attempts": 3, "on": ["interrupted", "x", "y"]}),
                "retry.on[1]",
            ),
            (
                json!({"max_attempts": 3, "on": ["no_capacity", "interrupted", "exit_code:0"]}),
                "retry.on[2]",
            ),
            (
                json!({"max_attempts": 3, "on": ["exit_code:5-2"]}),
                "retry.on[0]",
            ),
            (
                json!({"max_attempts": 3, "on": ["exit_code:256"]}),
                "retry.on[0]",
            ),
            (json!({"max_attempts": 3, "on": [3]}), "retry.on[0]"),
            (
                json!({"max_attempts": 3, "on": ["interrupted"], "delay": 1}),
                "retry.delay",
            ),
        ] {
            match RetryPolicy::parse(&bad) {
                Err(ApiError::Validation { field: f, message }) => {
                    assert_eq!(f, field, "{bad}: {message}");
                    assert!(message.contains(field), "{bad}: {message}");
                }
                other => panic!("{bad} was accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn retries_match_the_ending_and_stop_at_max_attempts() {
        let p =
            RetryPolicy::parse(&json!({"max_attempts": 3, "on": ["exit_code:3-4", "interrupted"]}))
                .unwrap();
        assert!(p.retries(1, FailureReason::ScriptFailed, Some(3)));
        assert!(p.retries(2, FailureReason::ScriptFailed, Some(4)));
        assert!(!p.retries(3, FailureReason::ScriptFailed, Some(3)));
        assert!(!p.retries(1, FailureReason::ScriptFailed, Some(5)));
        assert!(!p.retries(1, FailureReason::ScriptFailed, None));
        assert!(p.retries(1, FailureReason::Interrupted, None));
        assert!(!p.retries(1, FailureReason::InstanceLost, None));
        assert!(!p.retries(1, FailureReason::InsufficientCredits, None));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_secs(2, 2), 2);
        assert_eq!(backoff_secs(2, 3), 4);
        assert_eq!(backoff_secs(2, 4), 8);
        assert_eq!(backoff_secs(30, 10), 300);
    }
}
