//! Performing a decision's effect at the provider and reporting what happened. Failures become
//! results the lifecycle understands, never a lost instance: a deploy that may have been tried
//! before looks its hostname up first and adopts what the earlier try created.
//!
//! A provider rate limit (429) is never a failure: the effect reports `RateLimited` and the job
//! is looked at again after `Retry-After` plus jitter; an effect whose calls are known to be
//! paused is not started at all ([`deferral`]).

use crate::observe::OsVolume;
use crate::App;
use mimiry_shared::error::ApiError;
use mimiry_shared::jobs::lifecycle::{DeployOutcome, Effect, EffectResult};
use mimiry_shared::jobs::model::owner_tag;
use mimiry_shared::jobs::report_token;
use mimiry_shared::jobs::wrapper::{wrap, WrapperInput};
use mimiry_shared::jobs::Job;
use mimiry_shared::provider::{
    DeleteOutcome, DeployRequest, GpuProvider, ProviderCall, ProviderError,
};
use mimiry_shared::ssh_keys;
use mimiry_shared::time::{now_ms, Millis};
use rand::Rng;
use std::time::Duration;

/// OS volume size (GB): the provider's common minimum.
const OS_VOLUME_GB: u32 = 50;
/// Jitter added to a rate-limit wait: one provider window, so that jobs deferred together
/// come back spread over it instead of all at the moment the limit resets.
const RATE_LIMIT_SPREAD_MS: Millis = 60_000;

/// How long a job waits when a project quota (startup scripts, storage) is full, plus the
/// spread: other jobs' teardowns free the room.
const QUOTA_WAIT: Duration = Duration::from_secs(20);

/// `wait` plus a random part of the spread, in milliseconds.
pub fn jittered(wait: Duration) -> Millis {
    let wait_ms = Millis::try_from(wait.as_millis()).unwrap_or(Millis::MAX / 2);
    wait_ms + rand::thread_rng().gen_range(0..=RATE_LIMIT_SPREAD_MS)
}

/// How long the provider calls `effect` would make are known to be rate limited, if they are:
/// the job is then deferred without calling (see `ratelimit.rs` in the shared crate).
pub fn deferral(app: &App, job: &Job, effect: &Effect) -> Option<Duration> {
    let provider = app.provider(provider_of(job, effect)).ok()?;
    calls_of(job, effect)
        .iter()
        .filter_map(|c| provider.rate_limit_wait(*c))
        .max()
}

/// The provider `effect` goes to, as the job's record says: an instance's own (a retired
/// attempt may be at another provider than the job now), the script's holder, else the
/// job's current provider.
fn provider_of<'a>(job: &'a Job, effect: &Effect) -> &'a str {
    match effect {
        Effect::DeleteInstance { instance_id } => job.provider_of_instance(instance_id),
        Effect::DeleteScript { .. } => job.script_provider(),
        _ => &job.provider,
    }
}

/// The rate-limited provider paths performing `effect` calls, in order.
fn calls_of(job: &Job, effect: &Effect) -> &'static [ProviderCall] {
    match effect {
        Effect::Deploy { adopt: true, .. } if job.script_id.is_none() => &[
            ProviderCall::ListInstances,
            ProviderCall::CreateScript,
            ProviderCall::Deploy,
        ],
        Effect::Deploy { adopt: true, .. } => &[ProviderCall::ListInstances, ProviderCall::Deploy],
        Effect::Deploy { .. } if job.script_id.is_none() => {
            &[ProviderCall::CreateScript, ProviderCall::Deploy]
        }
        Effect::Deploy { .. } => &[ProviderCall::Deploy],
        Effect::LookUpDeploy { .. } => &[ProviderCall::ListInstances],
        Effect::DeleteInstance { .. } => &[ProviderCall::DeleteInstance],
        // A per-id path: only a project-wide pause applies, and the call reports it.
        Effect::DeleteScript { .. } | Effect::None => &[],
    }
}

fn rate_limited(e: &ProviderError) -> Option<Millis> {
    e.retry_after().map(jittered)
}

/// Performs `effect`; `os_volume` is the job's instance's OS volume as observed this round.
pub async fn perform(
    app: &App,
    job: &Job,
    effect: &Effect,
    os_volume: Option<OsVolume>,
) -> Result<EffectResult, ApiError> {
    let provider = app.provider(provider_of(job, effect))?.as_ref();
    Ok(match effect {
        Effect::None => unreachable!("no effect to perform"),
        Effect::Deploy {
            location,
            hostname,
            adopt,
        } => deploy(app, provider, job, location, hostname, *adopt).await?,
        Effect::LookUpDeploy { hostname } => match find_by_hostname(provider, hostname).await {
            Ok(instance_id) => EffectResult::LookedUp { instance_id },
            Err(e) => match rate_limited(&e) {
                Some(retry_after_ms) => EffectResult::RateLimited { retry_after_ms },
                None => return Err(e.into()),
            },
        },
        Effect::DeleteInstance { instance_id } => {
            let requested_at = now_ms();
            // Named so it is deleted for good. Seen this round, or else (a retired instance,
            // no look this round) the client reads the instance first.
            let volume = os_volume
                .filter(|v| v.instance_id == *instance_id)
                .map(|v| v.volume_id);
            match provider
                .delete_instance(instance_id, volume.as_deref())
                .await
            {
                Ok(DeleteOutcome::Accepted) => EffectResult::Deleted {
                    instance_id: instance_id.clone(),
                    already_gone: false,
                    requested_at,
                },
                Ok(DeleteOutcome::AlreadyGone) => EffectResult::Deleted {
                    instance_id: instance_id.clone(),
                    already_gone: true,
                    requested_at,
                },
                Ok(DeleteOutcome::NotYet) => EffectResult::DeleteRefused {
                    instance_id: instance_id.clone(),
                },
                Err(ProviderError::RateLimited { retry_after }) => EffectResult::RateLimited {
                    retry_after_ms: jittered(retry_after),
                },
                Err(e) => EffectResult::DeleteFailed {
                    instance_id: instance_id.clone(),
                    unanswered: matches!(e, ProviderError::Timeout | ProviderError::Transport(_)),
                    message: e.to_string(),
                },
            }
        }
        Effect::DeleteScript { script_id } => match provider.delete_script(script_id).await {
            Ok(()) => EffectResult::ScriptDeleted,
            Err(ProviderError::RateLimited { retry_after }) => EffectResult::RateLimited {
                retry_after_ms: jittered(retry_after),
            },
            Err(e) => EffectResult::ScriptDeleteFailed {
                message: e.to_string(),
            },
        },
    })
}

async fn find_by_hostname(
    provider: &dyn GpuProvider,
    hostname: &str,
) -> Result<Option<String>, ProviderError> {
    Ok(provider
        .list_instances()
        .await?
        .into_iter()
        .find(|i| i.hostname == hostname)
        .map(|i| i.id))
}

/// What a failed script creation or deploy means for the job.
fn deploy_failure(job: &Job, e: ProviderError) -> DeployOutcome {
    match e {
        ProviderError::NoCapacity(message) => DeployOutcome::NoCapacity { message },
        ProviderError::RateLimited { retry_after } => DeployOutcome::RateLimited {
            retry_after_ms: jittered(retry_after),
        },
        // Not this job's failure: 100 jobs between script and teardown fill the script quota
        // in a burst. Nothing was created; wait like a rate limit (no error counted).
        ProviderError::QuotaExceeded(message) => {
            tracing::warn!(job_id = %job.job_id, %message, "provider quota full; job deferred");
            DeployOutcome::RateLimited {
                retry_after_ms: jittered(QUOTA_WAIT),
            }
        }
        e => DeployOutcome::Failed {
            transient: e.is_transient(),
            message: e.to_string(),
        },
    }
}

async fn deploy(
    app: &App,
    provider: &dyn GpuProvider,
    job: &Job,
    location: &str,
    hostname: &str,
    adopt: bool,
) -> Result<EffectResult, ApiError> {
    let failed = |script_id: Option<String>, e: ProviderError| EffectResult::Deploy {
        script_id,
        outcome: deploy_failure(job, e),
    };
    // Adopt what an earlier, interrupted try created.
    let found = if adopt {
        find_by_hostname(provider, hostname).await
    } else {
        Ok(None)
    };
    match found {
        Ok(Some(instance_id)) => {
            return Ok(EffectResult::Deploy {
                script_id: None,
                outcome: DeployOutcome::Deployed { instance_id },
            })
        }
        Ok(None) => {}
        // Whatever the error, we do not know whether an earlier try created the instance:
        // retry (transient), never give the deploy up here.
        Err(e @ ProviderError::RateLimited { .. }) => return Ok(failed(None, e)),
        Err(e) => {
            return Ok(EffectResult::Deploy {
                script_id: None,
                outcome: DeployOutcome::Failed {
                    transient: true,
                    message: e.to_string(),
                },
            })
        }
    }
    // A secret deleted since the submit fails the job here, before anything is created.
    if let Some(name) =
        mimiry_shared::jobs::env::missing_secret(&app.store, &job.account_id, &job.environment)
            .await?
    {
        return Ok(EffectResult::Deploy {
            script_id: None,
            outcome: DeployOutcome::SecretMissing {
                message: mimiry_shared::jobs::env::secret_deleted_message(&name),
            },
        });
    }
    // The job's keys as this provider knows them, registered there on first use.
    let ssh_key_ids = if job.ssh_key_ids.is_empty() {
        Vec::new()
    } else {
        match ssh_keys::ids_at(&app.store, provider, &job.account_id, &job.ssh_key_ids).await? {
            Ok(ids) => ids,
            Err(e) => return Ok(failed(None, e)),
        }
    };
    // The wrapper is the same text at every try (the token is derived from the job): it goes
    // with the deploy too, for a provider without stored scripts.
    let token = report_token::issue(app.signing_key.get().await?, &job.account_id, &job.job_id);
    let report_url = format!("{}/jobs/{}/report", app.public_base_url, job.job_id);
    let script = wrap(&WrapperInput {
        job_id: &job.job_id,
        user_script: job.startup_script.as_deref().unwrap_or(""),
        report_url: &report_url,
        report_token: &token,
        auto_shutdown: job.auto_shutdown,
        fetch_env: !job.environment.is_empty(),
        attempt: job.attempt(),
    });
    let script_id = match &job.script_id {
        Some(id) => id.clone(),
        None => match provider
            .create_script(&owner_tag(&job.job_id, &job.account_id), &script)
            .await
        {
            Ok(id) => id,
            Err(e) => return Ok(failed(None, e)),
        },
    };
    let new_script = job.script_id.is_none().then(|| script_id.clone());
    let request = DeployRequest {
        instance_type: job.instance_type.clone(),
        image: job.image.clone(),
        hostname: hostname.to_string(),
        description: owner_tag(&job.job_id, &job.account_id),
        ssh_key_ids,
        location_code: location.to_string(),
        startup_script_id: Some(script_id),
        startup_script: Some(script),
        os_volume_size_gb: OS_VOLUME_GB,
        is_spot: job.spot,
    };
    Ok(match provider.deploy(&request).await {
        Ok(instance_id) => EffectResult::Deploy {
            script_id: new_script,
            outcome: DeployOutcome::Deployed { instance_id },
        },
        Err(e) => failed(new_script, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_wait_is_spread_over_one_window_after_it() {
        let wait = Duration::from_secs(49);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let ms = jittered(wait);
            assert!(
                (49_000..=49_000 + RATE_LIMIT_SPREAD_MS).contains(&ms),
                "{ms}"
            );
            seen.insert(ms / 10_000);
        }
        assert!(seen.len() >= 4, "spread, not one moment: {seen:?}");
    }

    fn a_job() -> Job {
        serde_json::from_value(serde_json::json!({
            "job_id": "j", "account_id": "a", "name": "n", "status": "queued",
            "instance_type": "1V100.6V", "image": "ubuntu", "requested_location": null,
            "location": null, "ssh_key_ids": [], "provider_ssh_key_ids": [],
            "startup_script": null, "auto_shutdown": true, "max_runtime_seconds": null,
            "provider": "datacrunch", "price_per_hour_micros": 0, "created_at": 0,
            "attempts": 0, "tried_locations": [], "script_id": null, "instance_id": null,
            "ip": null, "deployed_at": null, "instance_seen_at": null,
            "instance_ended_at": null, "retired_instances": [], "started_at": null,
            "offline_seen_at": null, "finished_at": null, "provider_errors": 0,
            "hold_micros": 0, "charged_micros": 0, "cancel_requested_at": null,
            "report": null, "outcome": null, "failure_reason": null, "error_message": null,
            "next_check_at": 0, "lease_until": null, "parked": false, "version": 0
        }))
        .expect("a job")
    }

    #[test]
    fn a_full_quota_waits_like_a_rate_limit_and_a_refusal_fails() {
        let job = a_job();
        let quota = deploy_failure(
            &job,
            ProviderError::QuotaExceeded("Startup scripts quota exceeded".into()),
        );
        match quota {
            DeployOutcome::RateLimited { retry_after_ms } => assert!(
                (20_000..=20_000 + RATE_LIMIT_SPREAD_MS).contains(&retry_after_ms),
                "{retry_after_ms}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            deploy_failure(&job, ProviderError::InvalidRequest("bad image".into())),
            DeployOutcome::Failed {
                transient: false,
                ..
            }
        ));
    }

    #[test]
    fn every_call_an_effect_makes_is_checked_before_it_starts() {
        use ProviderCall::*;
        let job = a_job();
        let deploy = |adopt| Effect::Deploy {
            location: "FIN-01".into(),
            hostname: "h".into(),
            adopt,
        };
        assert_eq!(calls_of(&job, &deploy(false)), [CreateScript, Deploy]);
        assert_eq!(
            calls_of(&job, &deploy(true)),
            [ListInstances, CreateScript, Deploy]
        );
        let with_script = Job {
            script_id: Some("s".into()),
            ..job.clone()
        };
        assert_eq!(calls_of(&with_script, &deploy(false)), [Deploy]);
        assert_eq!(
            calls_of(&with_script, &deploy(true)),
            [ListInstances, Deploy]
        );
        assert_eq!(
            calls_of(
                &job,
                &Effect::DeleteInstance {
                    instance_id: "i".into()
                }
            ),
            [DeleteInstance]
        );
        assert_eq!(
            calls_of(
                &job,
                &Effect::LookUpDeploy {
                    hostname: "h".into()
                }
            ),
            [ListInstances]
        );
    }

    #[test]
    fn each_effect_goes_to_the_provider_the_record_names() {
        use mimiry_shared::jobs::model::RetiredLife;
        let mut job = a_job();
        job.provider = "lambda".into();
        job.retired_lives = vec![RetiredLife {
            instance_id: "dc-1".into(),
            deploy_requested_at: None,
            provider: Some("datacrunch".into()),
        }];
        job.script_id = Some("s".into());
        job.script_provider = Some("datacrunch".into());
        let delete = |id: &str| Effect::DeleteInstance {
            instance_id: id.into(),
        };
        assert_eq!(provider_of(&job, &delete("dc-1")), "datacrunch");
        assert_eq!(provider_of(&job, &delete("l-1")), "lambda");
        assert_eq!(
            provider_of(
                &job,
                &Effect::DeleteScript {
                    script_id: "s".into()
                }
            ),
            "datacrunch"
        );
        let deploy = Effect::Deploy {
            location: "us-east-1".into(),
            hostname: "h".into(),
            adopt: false,
        };
        assert_eq!(provider_of(&job, &deploy), "lambda");
    }
}
