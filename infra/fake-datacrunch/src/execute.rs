//! Execute mode: really run an instance's startup script on this machine.
//!
//! When an instance with a startup script becomes `running`, the script is written to
//! `WORK/<instance_id>/startup.sh` and run with `bash`, with stdout and stderr appended to
//! `WORK/<instance_id>/output.log`. This lets the whole Mimiry job path (script generation, the
//! job's report back to the API, self-shutdown) run end to end without a GPU.
//!
//! The scripts are other people's code, so when the fake runs as root (and `unshare` and
//! `setpriv` from util-linux work, checked once at start-up by [`probe_sandbox`]) each instance
//! is a small *sandbox*:
//! - its own PID namespace (`unshare --pid --fork --mount-proc`): it sees only its own
//!   processes (so not another job's `curl -H 'Authorization: Bearer …'` command line), and when
//!   the namespace's init dies the kernel kills everything in it, `setsid`/`nohup` children too;
//! - its own mount namespace, in which `/tmp` and `/var/tmp` are `WORK/<instance_id>` (its
//!   working directory and `HOME`) and `/dev/shm` a fresh tmpfs: nothing it leaves in a
//!   temporary directory is visible to another instance, and it all goes with the directory;
//! - its own unprivileged uid and gid ([`Sandbox::uid`]: distinct per instance, no capabilities,
//!   `no_new_privs`), owner of `WORK/<instance_id>` (mode 0700): another instance cannot read
//!   its script, report token included, or its output.
//!
//! The network namespace is the host's on purpose: the job's wrapper reports back to the local
//! API on 127.0.0.1. The environment is not inherited from the fake (which may hold secrets):
//! the script gets `PATH`, `HOME` and `MIMIRY_FAKE_INSTANCE_ID` / `MIMIRY_FAKE_ADMIN_URL`.
//!
//! Without root the fake logs a warning and runs scripts unconfined, as its own user, in
//! `WORK/<instance_id>` and their own process group.
//!
//! The script cannot act on the real machine: it is not root, and `WORK/<instance_id>/bin` is
//! put first on `PATH` with shims for the commands a job uses to act on its machine:
//! - `shutdown`, `poweroff`, `halt`: ask the fake to power the instance off
//!   (`POST /admin/instances/{id}/shutdown`, so it goes `offline` after `shutdown_ms`, exactly
//!   as a real `shutdown -h now` would) and exit 0. `shutdown -r` and `reboot` do nothing;
//! - `systemctl`: `poweroff`/`halt` as above, everything else is ignored;
//! - `sudo`: runs its arguments directly (so `sudo shutdown` still finds the shim rather than
//!   the real binary through sudo's `secure_path`);
//! - `nvidia-smi`: prints a plausible table (or `-L` / `--query-gpu` CSV) for the instance type.
//!
//! The script's processes outlive the script itself, as on a machine whose boot script has
//! finished: a small init (bash, PID 1 of the sandbox) reports the script's exit code and stays
//! up. When the instance leaves `running` (offline, error, deleted, vanished, reset), the init
//! and with it every process of the instance get SIGKILL, as a powered-off machine would; when
//! it is gone for good (deleted, vanished, reset, the fake stopped) `WORK/<instance_id>` is
//! removed as well.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{chown, DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use chrono::Utc;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    catalog::InstanceType,
    state::{AppState, Instance, ScriptProcess},
};

/// The `PATH` of the init, which runs as root: system directories only, never one an instance
/// (or anyone else) can write to.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Sandbox uids are taken from 0x7000_0000..0x7FFE_0000, a range the usual conventions leave
/// unused (system and regular users, systemd's dynamic users and container ranges are below,
/// systemd's "foreign" range just above; above 2^31 is avoided for signedness), so that they
/// belong to no real user of the machine.
const UID_FIRST: u32 = 0x7000_0000;
const UID_SPAN: u32 = 0x0FFE_0000;

/// Sandbox settings, present when the fake can confine scripts (see [`probe_sandbox`]).
#[derive(Debug, Clone, Copy)]
pub struct Sandbox {
    /// A random offset per fake server, so that two fakes on one machine (parallel tests) do
    /// not hand out the same uids.
    uid_offset: u32,
}

impl Sandbox {
    /// The uid (and gid) of the instance with creation number `seq`: distinct for every
    /// instance of this server.
    pub fn uid(&self, seq: u64) -> u32 {
        // Truncating `seq` is fine: the span is far beyond any number of instances.
        UID_FIRST + (self.uid_offset.wrapping_add(seq as u32) % UID_SPAN)
    }
}

/// Whether scripts can be sandboxed here: runs the same tools, with the same privileges the
/// sandbox needs (a PID and mount namespace, dropping to another uid), on `true`. Logs a
/// warning when they cannot.
pub async fn probe_sandbox() -> Option<Sandbox> {
    let sandbox = Sandbox {
        uid_offset: rand::random::<u32>() % UID_SPAN,
    };
    let uid = sandbox.uid(0).to_string();
    let probe = tokio::process::Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .args(UNSHARE)
        .args([
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &uid,
            "--clear-groups",
        ])
        .args(["--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"])
        .args(["--", "true"])
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match probe {
        Ok(status) if status.success() => {
            tracing::info!("execute mode: each instance runs in its own sandbox");
            Some(sandbox)
        }
        _ => {
            tracing::warn!(
                "execute mode WITHOUT a sandbox: startup scripts run as this user, can read each \
                 other's files and tokens, and a setsid child outlives its instance; run the fake \
                 as root with util-linux's unshare and setpriv to confine them"
            );
            None
        }
    }
}

/// `unshare` with its own PID and mount namespaces; `--kill-child` so that the namespace's init
/// dies with `unshare`.
const UNSHARE: [&str; 6] = [
    "unshare",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
    "--",
];

/// The init of an instance, run by `bash -c` with `$1` the sandbox uid (empty: no sandbox),
/// `$2` the instance's directory and `$3` the script's `PATH`. It runs as root in the sandbox,
/// so it only ever uses `SYSTEM_PATH`. It prints the script's exit code on its stdout (to the
/// fake), then stays up, reaping orphans, until it is killed.
const INIT: &str = r#"set -u
uid=$1 dir=$2 path=$3
if [ -n "$uid" ]; then
  # /var/tmp first, then /tmp from it: mount resolves paths by name, and $dir may be under /tmp.
  fail() { echo "fake-datacrunch: could not set up the sandbox" >&2; exit 125; }
  mount --bind "$dir" /var/tmp && mount --bind /var/tmp /tmp && cd /tmp || fail
  if [ -d /dev/shm ]; then mount -t tmpfs -o mode=1777,size=64m tmpfs /dev/shm || fail; fi
  as=(setpriv --reuid="$uid" --regid="$uid" --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all --)
else
  cd "$dir" || exit 125
  as=()
fi
"${as[@]}" env PATH="$path" HOME="$PWD" bash startup.sh </dev/null >&2
echo "$?"
exec >&-
while :; do sleep 3600 & wait $!; done
"#;

/// Writes the script and shims and starts the instance's init. Called with the state lock
/// held; the only blocking work is a few small file writes and a fork/exec.
pub fn start(state: &AppState, inst: &mut Instance, root: &Path, script: &str) -> io::Result<()> {
    let dir = root.join(&inst.id);
    let uid = state.sandbox.map(|s| s.uid(inst.seq));
    prepare_dir(&dir, uid, script, &state.admin_base, inst)?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("output.log"))?;
    if let Some(uid) = uid {
        chown(dir.join("output.log"), Some(uid), Some(uid))?;
    }

    // The shims as the script sees them: its directory is its /tmp in the sandbox.
    let bin = match uid {
        Some(_) => PathBuf::from("/tmp/bin"),
        None => dir.join("bin"),
    };
    let mut script_path = bin.into_os_string();
    script_path.push(":");
    match std::env::var_os("PATH") {
        Some(p) if !p.is_empty() => script_path.push(p),
        _ => script_path.push(SYSTEM_PATH),
    }

    let mut cmd = match uid {
        Some(_) => {
            let mut c = tokio::process::Command::new("setpriv");
            // The sandbox dies with the fake even if the fake is SIGKILLed. (The signal comes
            // when the spawning *thread* ends: a tokio worker, which lives as long as the
            // runtime.)
            c.args(["--pdeathsig", "KILL", "--"])
                .args(UNSHARE)
                .arg("bash");
            c
        }
        None => tokio::process::Command::new("bash"),
    };
    cmd.args(["-c", INIT, "init"])
        .arg(uid.map(|u| u.to_string()).unwrap_or_default())
        .arg(&dir)
        .arg(script_path)
        .current_dir(&dir)
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("MIMIRY_FAKE_INSTANCE_ID", &inst.id)
        .env("MIMIRY_FAKE_ADMIN_URL", &*state.admin_base)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        // Its own process group, so that kill reaches the init (and, without a sandbox,
        // everything the script started that did not leave the group).
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("child has no pid"))?;
    tracing::info!(id = %inst.id, pid, ?uid, dir = %dir.display(), "startup script started");
    inst.process = Some(ScriptProcess {
        pid,
        uid,
        work_dir: dir,
        started_at: Utc::now(),
        exit_code: None,
        exited: false,
        killed: false,
        removed: false,
    });

    // Record how the script ended (visible in `GET /admin/state`), then reap the init once it
    // is killed. The instance stays `running` after the script ends, as a real machine would.
    // The reaper holds the state weakly so a stopped server is not kept alive by a script.
    let weak = state.weak();
    let id = inst.id.clone();
    let stdout = child.stdout.take();
    tokio::spawn(async move {
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = BufReader::new(out).read_line(&mut line).await;
        }
        let exit_code = match line.trim().parse::<i32>() {
            Ok(code) => Some(code),
            // No code: the init died first (killed, or the sandbox could not be set up).
            Err(_) => child.wait().await.ok().and_then(|s| s.code()),
        };
        if let Some(inner) = weak.upgrade() {
            let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = g
                .instances
                .get_mut(&id)
                .and_then(|i| i.process.as_mut())
                .filter(|p| p.pid == pid)
            {
                p.exited = true;
                p.exit_code = exit_code;
            }
        }
        tracing::info!(%id, pid, ?exit_code, "startup script exited");
        let _ = child.wait().await;
    });
    Ok(())
}

/// Creates `dir` (fresh, mode 0700) with the script and the shims; in a sandbox, `dir` and the
/// script belong to the instance's uid, the shims stay root's.
fn prepare_dir(
    dir: &Path,
    uid: Option<u32>,
    script: &str,
    admin_base: &str,
    inst: &Instance,
) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(dir)?;
    let bin = dir.join("bin");
    fs::create_dir(&bin)?;
    write_shims(&bin, admin_base, &inst.id, inst.instance_type)?;
    let script_file = dir.join("startup.sh");
    write_file(&script_file, script, 0o700)?;
    if let Some(uid) = uid {
        chown(dir, Some(uid), Some(uid))?;
        chown(&script_file, Some(uid), Some(uid))?;
    }
    Ok(())
}

/// SIGKILLs the instance's init (and so, in a sandbox, every process of the instance), once.
/// Synchronous (waits for `kill`) so that when a delete has been answered, the processes are
/// gone.
pub fn kill(inst: &mut Instance) {
    let Some(p) = inst.process.as_mut() else {
        return;
    };
    if p.killed {
        return;
    }
    p.killed = true;
    // The whole group: without a sandbox, background jobs of the script live in it.
    let result = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", p.pid)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match result {
        Ok(_) => tracing::info!(id = %inst.id, pgid = p.pid, "script process group killed"),
        Err(e) => tracing::warn!(id = %inst.id, error = %e, "could not run kill"),
    }
}

/// The instance is gone for good: kills its processes and removes its directory. With
/// `in_background` the removal runs on its own thread (a job may leave a large directory, and
/// this is called with the state lock held); without, it is done before returning (the fake is
/// stopping).
pub fn discard(inst: &mut Instance, in_background: bool) {
    kill(inst);
    let Some(p) = inst.process.as_mut() else {
        return;
    };
    if std::mem::replace(&mut p.removed, true) {
        return;
    }
    let dir = p.work_dir.clone();
    if in_background {
        std::thread::spawn(move || remove_dir(&dir));
    } else {
        remove_dir(&dir);
    }
}

/// Removes `dir`, retrying a few times: processes SIGKILLed a moment ago may still be on their
/// way out and have a file open or half-created in it.
fn remove_dir(dir: &Path) {
    let mut last = None;
    for _ in 0..20 {
        match fs::remove_dir_all(dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "instance directory removed");
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(e) = last {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the instance directory");
    }
}

fn write_file(path: &Path, content: &str, mode: u32) -> io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(content.as_bytes())?;
    drop(f);
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn write_executable(path: &Path, content: &str) -> io::Result<()> {
    write_file(path, content, 0o755)
}

fn write_shims(bin: &Path, admin_base: &str, id: &str, t: &InstanceType) -> io::Result<()> {
    write_executable(&bin.join("shutdown"), &shutdown_shim(admin_base, id))?;
    let power_off = "#!/usr/bin/env bash\n\
        # fake-datacrunch shim: powering off is asked of the fake provider, never of this machine.\n\
        exec \"$(dirname \"$0\")/shutdown\" -h now\n";
    write_executable(&bin.join("poweroff"), power_off)?;
    write_executable(&bin.join("halt"), power_off)?;
    write_executable(
        &bin.join("reboot"),
        "#!/usr/bin/env bash\n\
         # fake-datacrunch shim: a reboot would bring the instance back running; do nothing.\n\
         echo 'fake reboot: ignored' >&2\nexit 0\n",
    )?;
    write_executable(&bin.join("systemctl"), SYSTEMCTL_SHIM)?;
    write_executable(&bin.join("sudo"), SUDO_SHIM)?;
    write_executable(&bin.join("nvidia-smi"), &nvidia_smi_shim(t))?;
    Ok(())
}

fn shutdown_shim(admin_base: &str, id: &str) -> String {
    // admin_base is `http://HOST:PORT`; the /dev/tcp fallback needs them apart.
    let hostport = admin_base.trim_start_matches("http://");
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "80"));
    format!(
        r#"#!/usr/bin/env bash
# fake-datacrunch shim for `shutdown`. It MUST NOT shut down this machine: it asks the fake
# provider to power instance {id} off (running -> offline after shutdown_ms), as a real
# `shutdown -h now` would on the cloud VM, and returns at once.
case " $* " in
  *" -r "*|*" --reboot "*) echo "fake shutdown: reboot ignored" >&2; exit 0 ;;
  *" -c "*|*" --cancel "*|*" -k "*) exit 0 ;;
esac
path="/admin/instances/{id}/shutdown"
echo "fake shutdown: powering off instance {id}" >&2
if command -v curl >/dev/null 2>&1; then
  curl -fsS -m 5 -X POST "{admin_base}$path" >/dev/null 2>&1 \
    || echo "fake shutdown: POST {admin_base}$path failed" >&2
elif exec 3<>"/dev/tcp/{host}/{port}"; then
  printf 'POST %s HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$path" >&3
  cat <&3 >/dev/null
  exec 3<&-
fi
exit 0
"#
    )
}

const SYSTEMCTL_SHIM: &str = r#"#!/usr/bin/env bash
# fake-datacrunch shim for `systemctl`: never act on this machine's services.
for a in "$@"; do
  case "$a" in
    poweroff|halt) exec "$(dirname "$0")/shutdown" -h now ;;
    reboot) echo "fake systemctl: reboot ignored" >&2; exit 0 ;;
  esac
done
echo "fake systemctl: ignored: $*" >&2
exit 0
"#;

const SUDO_SHIM: &str = r#"#!/usr/bin/env bash
# fake-datacrunch shim for `sudo`: the script already has the instance's privileges; run the
# command directly so that PATH (and so the shutdown shim) is kept.
while [ $# -gt 0 ]; do
  case "$1" in
    -u|-g|-h|-p|-C|-D|-r|-t|-T|-U) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -eq 0 ] && exit 0
exec "$@"
"#;

/// MiB as `nvidia-smi` reports them (a bit under the marketing GB).
fn smi_mib(gb: u32) -> u32 {
    gb * 1019
}

/// The default `nvidia-smi` table (without the date line) for `t`.
pub fn nvidia_smi_table(t: &InstanceType) -> String {
    const DRIVER: &str = "550.127.05";
    let sep = "+-----------------------------------------+------------------------+----------------------+";
    let full = "+-----------------------------------------------------------------------------------------+";
    let boxed = |s: &str| format!("|{s:<89}|");
    let mut out = vec![
        full.to_string(),
        boxed(&format!(
            " NVIDIA-SMI {DRIVER:<22} Driver Version: {DRIVER:<14} CUDA Version: 12.4"
        )),
        "|-----------------------------------------+------------------------+----------------------+".to_string(),
        "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |".to_string(),
        "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |".to_string(),
        "|                                         |                        |               MIG M. |".to_string(),
        "|=========================================+========================+======================|".to_string(),
    ];
    let mib = smi_mib(t.gpu_memory_per_gpu_gb);
    for i in 0..t.gpus {
        let name: String = t.smi_name.chars().take(29).collect();
        let bus = format!("00000000:{:02X}:00.0", 0x18 + i * 0x10);
        out.push(format!(
            "| {i:>3}  {name:<29}{:>4}  | {bus:>18} {:>3} | {:>20} |",
            "On", "Off", "0"
        ));
        let power = format!("{}W / {:>4}W", 60 + i, t.max_power_w);
        let mem = format!("{}MiB / {:>6}MiB", 1, mib);
        out.push(format!(
            "| N/A  {:>3}C    P0{power:>24} | {mem:>22} | {:>6}{:>14} |",
            32 + i,
            "0%",
            "Default"
        ));
        out.push(format!("|{:41}|{:24}| {:>20} |", "", "", "Disabled"));
        out.push(sep.to_string());
    }
    out.push(String::new());
    out.push(full.to_string());
    out.push(boxed(" Processes:"));
    out.push(boxed(
        "  GPU   GI   CI        PID   Type   Process name                              GPU Memory",
    ));
    out.push(boxed(
        "        ID   ID                                                               Usage     ",
    ));
    out.push(format!("|{}|", "=".repeat(89)));
    out.push(boxed("  No running processes found"));
    out.push(full.to_string());
    out.join("\n") + "\n"
}

fn nvidia_smi_shim(t: &InstanceType) -> String {
    format!(
        r#"#!/usr/bin/env bash
# fake-datacrunch shim for `nvidia-smi` on a {itype} ({gpus} GPU). Prints plausible output only.
GPU_COUNT={gpus}
GPU_NAME='{name}'
MEM_MIB={mib}
POWER_CAP={power}
DRIVER=550.127.05
if [ "$GPU_COUNT" -eq 0 ]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
  exit 9
fi
uuid() {{ printf 'GPU-%08x-5eed-4000-8000-%012d' "$((0x6a7e0000 + $1))" "$1"; }}
bus() {{ printf '00000000:%02X:00.0' "$((0x18 + $1 * 0x10))"; }}
query=""; noheader=0; nounits=0
for a in "$@"; do
  case "$a" in
    -L|--list-gpus)
      for ((i = 0; i < GPU_COUNT; i++)); do echo "GPU $i: $GPU_NAME (UUID: $(uuid $i))"; done
      exit 0 ;;
    --query-gpu=*) query="${{a#--query-gpu=}}" ;;
    --format=*)
      case "$a" in *noheader*) noheader=1 ;; esac
      case "$a" in *nounits*) nounits=1 ;; esac ;;
  esac
done
if [ -n "$query" ]; then
  IFS=',' read -ra fields <<< "$query"
  if [ "$noheader" -eq 0 ]; then
    line=""
    for f in "${{fields[@]}}"; do f="${{f// /}}"; line="${{line:+$line, }}$f"; done
    echo "$line"
  fi
  for ((i = 0; i < GPU_COUNT; i++)); do
    line=""
    for f in "${{fields[@]}}"; do
      f="${{f// /}}"; unit=""
      case "$f" in
        index) v=$i ;;
        name|gpu_name) v="$GPU_NAME" ;;
        uuid|gpu_uuid) v="$(uuid $i)" ;;
        count) v=$GPU_COUNT ;;
        driver_version) v=$DRIVER ;;
        pci.bus_id|gpu_bus_id) v="$(bus $i)" ;;
        memory.total) v=$MEM_MIB; unit=" MiB" ;;
        memory.used) v=1; unit=" MiB" ;;
        memory.free) v=$((MEM_MIB - 1)); unit=" MiB" ;;
        utilization.gpu|utilization.memory) v=0; unit=" %" ;;
        temperature.gpu) v=$((32 + i)) ;;
        power.draw) v="$((60 + i)).00"; unit=" W" ;;
        power.limit) v="$POWER_CAP.00"; unit=" W" ;;
        *) v="[N/A]" ;;
      esac
      [ "$nounits" -eq 0 ] && v="$v$unit"
      line="${{line:+$line, }}$v"
    done
    echo "$line"
  done
  exit 0
fi
date '+%a %b %e %H:%M:%S %Y'
cat <<'TABLE'
{table}TABLE
"#,
        itype = t.instance_type,
        gpus = t.gpus,
        name = t.smi_name,
        mib = smi_mib(t.gpu_memory_per_gpu_gb),
        power = t.max_power_w,
        table = nvidia_smi_table(t),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn table_lines_have_constant_width() {
        let t = catalog::instance_type("8H100.80S.176V").unwrap();
        let table = nvidia_smi_table(t);
        for line in table.lines().filter(|l| !l.is_empty()) {
            assert_eq!(line.chars().count(), 91, "{line:?}");
        }
        assert_eq!(table.matches("NVIDIA H100 80GB HBM3").count(), 8);
    }
}
