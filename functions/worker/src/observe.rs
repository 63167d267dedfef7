//! What the worker looks at before deciding: the instance's state at the provider, the
//! locations with capacity (only when it must pick one), the balance (only when the hold must
//! grow). Provider trouble is an observation, not an error.

use crate::App;
use mimiry_shared::error::ApiError;
use mimiry_shared::jobs::lifecycle::{
    needs_availability, needs_balance, needs_instance_look, InstanceObservation, InstanceState,
    Observation,
};
use mimiry_shared::jobs::Job;
use mimiry_shared::money::Micros;
use mimiry_shared::provider::placement::{candidates, Wanted};
use mimiry_shared::time::{now_ms, parse_rfc3339, Millis};

/// An observation, and the OS volume of the job's instance as just read (the delete that may
/// follow names it, without reading the instance again).
pub struct Looked {
    pub observation: Observation,
    pub os_volume: Option<OsVolume>,
}

/// The OS volume of an instance.
pub struct OsVolume {
    pub instance_id: String,
    pub volume_id: String,
}

pub async fn observe(app: &App, job: &Job, now: Millis) -> Result<Looked, ApiError> {
    let mut os_volume = None;
    let mut answered_at = None;
    let mut instance_created_at = None;
    let instance = match &job.instance_id {
        Some(id) if needs_instance_look(job) => {
            match app.provider(&job.provider)?.get_instance(id).await {
                Ok(Some(info)) => {
                    answered_at = Some(now_ms());
                    instance_created_at = info.created_at.as_deref().and_then(parse_rfc3339);
                    os_volume = info.os_volume_id.clone().map(|volume_id| OsVolume {
                        instance_id: id.clone(),
                        volume_id,
                    });
                    InstanceObservation::Seen(InstanceState::of(&info))
                }
                Ok(None) => {
                    answered_at = Some(now_ms());
                    InstanceObservation::Seen(InstanceState::Gone)
                }
                Err(e) => InstanceObservation::Unreachable(e.to_string()),
            }
        }
        _ => InstanceObservation::NotLooked,
    };
    let candidates = if needs_availability(job) {
        let wanted = Wanted {
            provider: &job.provider,
            instance_type: &job.instance_type,
            image: &job.image,
            pinned: job.requested_provider.is_some(),
            spot: job.spot,
        };
        Some(candidates(&app.catalogs, &wanted).await)
    } else {
        None
    };
    let balance = if needs_balance(job, now, &app.timers) {
        let account = app.store.get_account(&job.account_id).await?;
        Micros(account.map_or(0, |a| a.balance_micros))
    } else {
        Micros::ZERO
    };
    Ok(Looked {
        observation: Observation {
            instance,
            candidates,
            balance,
            answered_at,
            instance_created_at,
        },
        os_volume,
    })
}
