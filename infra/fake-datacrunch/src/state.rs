//! The in-memory state shared by all handlers and timers.
//!
//! Everything lives behind one `std::sync::Mutex`: the fake serves a handful of requests per
//! second, and a single lock makes every transition atomic (a timer and a `PUT /instances`
//! cannot interleave halfway). The lock is never held across an `.await`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Instant,
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    catalog, conformance::ConformanceLog, execute::Sandbox, faults::Faults, ratelimit::RateLimiter,
    FakeConfig,
};

/// Cheap-to-clone handle on the server state.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<FakeConfig>,
    /// `http://127.0.0.1:PORT`, what the execute-mode `shutdown` shim calls back.
    pub admin_base: Arc<str>,
    /// Execute mode: how scripts are confined (`None`: they are not, see `execute`).
    pub sandbox: Option<Sandbox>,
    inner: Arc<Mutex<Inner>>,
}

impl AppState {
    pub fn new(config: FakeConfig, admin_base: String, sandbox: Option<Sandbox>) -> Self {
        let inner = Inner::new(&config);
        Self {
            config: Arc::new(config),
            admin_base: admin_base.into(),
            sandbox,
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// Locks the state. A panic while holding the lock would poison it; the fake keeps going
    /// with the data as it is rather than failing every later request.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle that does not keep the state alive (for tasks that may outlive the server,
    /// such as a script's reaper).
    pub fn weak(&self) -> Weak<Mutex<Inner>> {
        Arc::downgrade(&self.inner)
    }
}

/// Instance statuses, snake_case on the wire (see the provider doc §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    Ordered,
    Validating,
    Pending,
    Provisioning,
    Running,
    Offline,
    StartingHibernation,
    Hibernating,
    Restoring,
    Deleting,
    Discontinued,
    Error,
    /// The OS installation failed: a failed boot (terminal), not a booting instance.
    InstallationFailed,
    NoCapacity,
    Notfound,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Ordered => "ordered",
            Status::Validating => "validating",
            Status::Pending => "pending",
            Status::Provisioning => "provisioning",
            Status::Running => "running",
            Status::Offline => "offline",
            Status::StartingHibernation => "starting_hibernation",
            Status::Hibernating => "hibernating",
            Status::Restoring => "restoring",
            Status::Deleting => "deleting",
            Status::Discontinued => "discontinued",
            Status::Error => "error",
            Status::InstallationFailed => "installation_failed",
            Status::NoCapacity => "no_capacity",
            Status::Notfound => "notfound",
            Status::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        serde_json::from_value(Value::String(s.trim().to_ascii_lowercase())).ok()
    }

    /// Statuses before `running`, in which the provider refuses shutdown and delete.
    pub fn is_booting(self) -> bool {
        matches!(
            self,
            Status::New
                | Status::Ordered
                | Status::Validating
                | Status::Pending
                | Status::Provisioning
        )
    }
}

/// What happens to a deployed instance when provisioning completes, decided at deploy time
/// from the `error_next_instances` / `vanish_next_instances` faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Run,
    Error,
    InstallationFailed,
    Vanish,
    /// A spot instance that runs, then is taken back (`interrupt_next_spot_instances`).
    Interrupt,
}

/// The startup script of an instance in execute mode, run by a small init (see `execute`).
#[derive(Debug, Clone)]
pub struct ScriptProcess {
    /// The fake's child (`setpriv`/`unshare` in a sandbox, else the init itself); also the
    /// process group id (it is started as a group leader).
    pub pid: u32,
    /// The sandbox uid and gid the script runs as; `None` without a sandbox.
    pub uid: Option<u32>,
    pub work_dir: PathBuf,
    pub started_at: DateTime<Utc>,
    /// How the script itself ended (its processes may live on until the instance stops).
    pub exit_code: Option<i32>,
    pub exited: bool,
    pub killed: bool,
    /// `work_dir` has been (or is being) removed.
    pub removed: bool,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    /// Creation order, for stable listings.
    pub seq: u64,
    pub instance_type: &'static catalog::InstanceType,
    pub status: Status,
    pub hostname: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub location: String,
    pub ip: Option<String>,
    pub os_volume_id: Option<String>,
    pub price_per_hour: f64,
    pub is_spot: bool,
    pub image: &'static catalog::Image,
    pub startup_script_id: Option<String>,
    /// The script text, copied at deploy time: deleting the script afterwards does not change
    /// what the machine runs at boot.
    pub startup_script: Option<String>,
    pub ssh_key_ids: Vec<String>,
    pub os_volume: Option<Value>,
    pub jupyter_token: String,
    pub contract: Option<String>,
    pub pricing: Option<String>,
    /// When the delete was accepted (the instance is `deleting`, then `discontinued`).
    pub deleted_at: Option<DateTime<Utc>>,
    pub vanished_at: Option<DateTime<Utc>>,
    pub fate: Fate,
    /// Bumped on every transition or pending action; a timer only fires if the epoch it was
    /// scheduled at is still current, so a forced status or a newer action cancels it.
    pub epoch: u64,
    pub process: Option<ScriptProcess>,
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Instance {
    pub fn deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// Visible through the provider API (vanished instances answer 404).
    pub fn visible(&self) -> bool {
        self.vanished_at.is_none()
    }

    /// The object of `GET /instances/{id}`.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert(
            "instance_type".into(),
            json!(self.instance_type.instance_type),
        );
        m.insert("status".into(), json!(self.status.as_str()));
        m.insert("hostname".into(), json!(self.hostname));
        m.insert("description".into(), json!(self.description));
        m.insert("created_at".into(), json!(rfc3339(&self.created_at)));
        m.insert("location".into(), json!(self.location));
        m.insert("ip".into(), json!(self.ip));
        m.insert("tags".into(), json!([]));
        m.insert("jupyter_token".into(), json!(self.jupyter_token));
        m.insert(
            "volume_ids".into(),
            json!(self.os_volume_id.iter().collect::<Vec<_>>()),
        );
        m.insert("os_volume_id".into(), json!(self.os_volume_id));
        m.insert("price_per_hour".into(), json!(self.price_per_hour));
        m.insert("is_spot".into(), json!(self.is_spot));
        m.insert("image".into(), json!(self.image.image_type));
        m.insert("os_name".into(), json!(self.image.name));
        m.insert("startup_script_id".into(), json!(self.startup_script_id));
        m.insert("ssh_key_ids".into(), json!(self.ssh_key_ids));
        // The documented enums; a deploy without them gets the defaults the API reports.
        let contract = match (&self.contract, self.is_spot) {
            (Some(c), _) => c.as_str(),
            (None, true) => "SPOT",
            (None, false) => "PAY_AS_YOU_GO",
        };
        m.insert("contract".into(), json!(contract));
        m.insert(
            "pricing".into(),
            json!(self.pricing.as_deref().unwrap_or("FIXED_PRICE")),
        );
        m.extend(self.instance_type.hardware_json());
        Value::Object(m)
    }

    /// The object of `GET /admin/state`: the provider view plus bookkeeping for tests.
    pub fn to_admin_json(&self) -> Value {
        let mut v = self.to_json();
        let m = v.as_object_mut().expect("object");
        m.insert(
            "created_at_ms".into(),
            json!(self.created_at.timestamp_millis()),
        );
        m.insert(
            "deleted_at_ms".into(),
            json!(self.deleted_at.map(|t| t.timestamp_millis())),
        );
        m.insert("deleted".into(), json!(self.deleted()));
        m.insert(
            "vanished_at_ms".into(),
            json!(self.vanished_at.map(|t| t.timestamp_millis())),
        );
        m.insert("vanished".into(), json!(self.vanished_at.is_some()));
        m.insert(
            "script_process".into(),
            match &self.process {
                None => Value::Null,
                Some(p) => json!({
                    "pid": p.pid,
                    "uid": p.uid,
                    "work_dir": p.work_dir,
                    "started_at_ms": p.started_at.timestamp_millis(),
                    "exited": p.exited,
                    "exit_code": p.exit_code,
                    "killed": p.killed,
                }),
            },
        );
        v
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SshKey {
    pub id: String,
    pub name: String,
    pub key: String,
    pub created_at: String,
    /// The real API computes an MD5 fingerprint; `null` is its documented value for a key it
    /// cannot parse, and nothing here needs the fingerprint.
    pub fingerprint: Option<String>,
    pub created_by_user_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Script {
    pub id: String,
    pub name: String,
    pub script: String,
    pub created_at: String,
    /// Creation order (timestamps can tie): newest first means highest `seq` first.
    #[serde(skip)]
    pub seq: u64,
}

/// Where a volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeState {
    Attached,
    Detached,
    /// Deleted into trash: kept `trash_ttl_secs` (96 h), counted against the storage quota.
    Trash,
}

/// A block volume; only OS volumes exist here (one per instance, created at deploy).
#[derive(Debug, Clone)]
pub struct Volume {
    pub id: String,
    pub name: String,
    pub size_gb: u64,
    pub instance_id: String,
    pub location: String,
    pub ssh_key_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub state: VolumeState,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Volume {
    /// The object of `GET /v1/volumes` (and of `/v1/volumes/trash`, with the deletion fields).
    pub fn to_json(&self) -> Value {
        let status = match self.state {
            VolumeState::Attached => "attached",
            VolumeState::Detached => "detached",
            VolumeState::Trash => "deleted",
        };
        let short = &self.id[..8.min(self.id.len())];
        let mut v = json!({
            "id": self.id,
            "instance_id": self.instance_id,
            "instances": [],
            "name": self.name,
            "created_at": rfc3339(&self.created_at),
            "status": status,
            "size": self.size_gb,
            "is_os_volume": true,
            "target": "vda",
            "type": "NVMe",
            "location": self.location,
            "ssh_key_ids": self.ssh_key_ids,
            "contract": "PAY_AS_YOU_GO",
            "base_hourly_cost": 0.0002 * self.size_gb as f64,
            "monthly_price": 0.2 * self.size_gb as f64,
            "currency": "usd",
            "tags": [],
        });
        let m = v.as_object_mut().expect("object");
        if let Some(t) = &self.deleted_at {
            m.insert("deleted_at".into(), json!(rfc3339(t)));
            m.insert("is_permanently_deleted".into(), json!(false));
        } else {
            m.insert("pseudo_path".into(), json!(format!("volume-{short}")));
            m.insert(
                "create_directory_command".into(),
                json!("mkdir -p /mnt/volume"),
            );
            m.insert(
                "mount_command".into(),
                json!(format!("mount -t nfs nfs.fake:volume-{short} /mnt/volume")),
            );
            m.insert(
                "filesystem_to_fstab_command".into(),
                json!(format!("echo 'nfs.fake:volume-{short} /mnt/volume nfs defaults 0 0' | sudo tee -a /etc/fstab")),
            );
            m.insert("long_term".into(), json!({}));
        }
        v
    }

    /// Admin view: the API object plus where it is.
    pub fn to_admin_json(&self) -> Value {
        let mut v = self.to_json();
        v["in_trash"] = json!(self.state == VolumeState::Trash);
        v
    }
}

/// Everything behind the lock.
pub struct Inner {
    pub instances: HashMap<String, Instance>,
    pub next_seq: u64,
    /// Insertion-ordered (a `Vec`) so listings are stable.
    pub ssh_keys: Vec<SshKey>,
    pub scripts: Vec<Script>,
    /// access token → expiry.
    pub access_tokens: HashMap<String, Instant>,
    /// Valid refresh tokens (single use: a refresh rotates them).
    pub refresh_tokens: HashSet<String>,
    pub tokens_issued: u64,
    pub faults: Faults,
    pub requests_total: u64,
    pub requests_by_route: BTreeMap<String, u64>,
    /// Every volume not permanently deleted (attached, detached, or in trash until it expires).
    pub volumes: Vec<Volume>,
    pub conformance: ConformanceLog,
    pub rate: RateLimiter,
}

impl Inner {
    pub fn new(config: &FakeConfig) -> Self {
        Self {
            instances: HashMap::new(),
            next_seq: 0,
            ssh_keys: Vec::new(),
            scripts: Vec::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashSet::new(),
            tokens_issued: 0,
            faults: Faults::new(config.token_ttl_secs),
            requests_total: 0,
            requests_by_route: BTreeMap::new(),
            volumes: Vec::new(),
            conformance: ConformanceLog::default(),
            rate: RateLimiter::new(config.rate_limits.clone()),
        }
    }

    /// Drops trashed volumes older than the trash lifetime (the provider purges them).
    pub fn purge_trash(&mut self, ttl_secs: u64) {
        let now = Utc::now();
        let ttl = chrono::Duration::seconds(ttl_secs.min(i64::MAX as u64) as i64);
        self.volumes.retain(|v| {
            v.state != VolumeState::Trash || v.deleted_at.is_none_or(|t| now - t < ttl)
        });
    }

    /// Gigabytes counted against the storage quota: every volume, trash included.
    pub fn storage_used_gb(&self) -> u64 {
        self.volumes.iter().map(|v| v.size_gb).sum()
    }

    /// Instances in creation order.
    pub fn instances_sorted(&self) -> Vec<&Instance> {
        let mut v: Vec<&Instance> = self.instances.values().collect();
        v.sort_by_key(|i| i.seq);
        v
    }

    /// An instance as the provider API sees it: `None` if unknown or vanished.
    pub fn visible_instance(&self, id: &str) -> Option<&Instance> {
        self.instances.get(id).filter(|i| i.visible())
    }
}

/// When the state goes away (server stopped: every task holding it was dropped), the fake
/// machines go with it: kill any script still running rather than leak processes, and remove
/// their directories (here and now: the process may be about to exit).
impl Drop for Inner {
    fn drop(&mut self) {
        for inst in self.instances.values_mut() {
            crate::execute::discard(inst, false);
        }
    }
}

pub fn now_rfc3339() -> String {
    rfc3339(&Utc::now())
}
