//! Execute mode: really run an instance's startup script on this machine.
//!
//! When an instance with a startup script becomes `running`, the script is written to
//! `WORK/<instance_id>/startup.sh` and run with `bash` in that directory, in its own process
//! group, with stdout and stderr appended to `WORK/<instance_id>/output.log`. This lets the whole
//! Mimiry job path (script generation, the job's report back to the API, self-shutdown) run end
//! to end without a GPU.
//!
//! The script runs as the fake's own user — on a real instance it would be root on a throwaway
//! VM, here it is this machine — so `WORK/<instance_id>/bin` is put first on `PATH` with shims
//! for the commands that would otherwise act on the real machine:
//! - `shutdown`, `poweroff`, `halt`: ask the fake to power the instance off
//!   (`POST /admin/instances/{id}/shutdown`, so it goes `offline` after `shutdown_ms`, exactly
//!   as a real `shutdown -h now` would) and exit 0. `shutdown -r` and `reboot` do nothing;
//! - `systemctl`: `poweroff`/`halt` as above, everything else is ignored;
//! - `sudo`: runs its arguments directly (so `sudo shutdown` still finds the shim rather than
//!   the real binary through sudo's `secure_path`);
//! - `nvidia-smi`: prints a plausible table (or `-L` / `--query-gpu` CSV) for the instance type.
//!
//! A script calling a binary by absolute path (`/sbin/shutdown`) bypasses the shims: don't.
//!
//! When the instance leaves `running` (offline, error, deleted, vanished, reset), the whole
//! process group gets SIGKILL, as a powered-off machine would.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Stdio,
};

use chrono::Utc;

use crate::{
    catalog::InstanceType,
    state::{AppState, Instance, ScriptProcess},
};

/// Writes the script and shims and starts `bash startup.sh`. Called with the state lock held;
/// the only blocking work is a few small file writes and a fork/exec.
pub fn start(state: &AppState, inst: &mut Instance, root: &Path, script: &str) -> io::Result<()> {
    let dir = root.join(&inst.id);
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    write_executable(&dir.join("startup.sh"), script)?;
    write_shims(&bin, &state.admin_base, &inst.id, inst.instance_type)?;

    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("output.log"))?;
    let path = match std::env::var_os("PATH") {
        Some(p) if !p.is_empty() => {
            let mut v = bin.clone().into_os_string();
            v.push(":");
            v.push(p);
            v
        }
        _ => {
            let mut v = bin.clone().into_os_string();
            v.push(":/usr/local/bin:/usr/bin:/bin");
            v
        }
    };
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("startup.sh")
        .current_dir(&dir)
        .env("PATH", path)
        .env("MIMIRY_FAKE_INSTANCE_ID", &inst.id)
        .env("MIMIRY_FAKE_ADMIN_URL", &*state.admin_base)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        // Its own process group, so that delete can kill the script and everything it started.
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("child has no pid"))?;
    tracing::info!(id = %inst.id, pid, dir = %dir.display(), "startup script started");
    inst.process = Some(ScriptProcess {
        pid,
        work_dir: dir,
        started_at: Utc::now(),
        exit_code: None,
        exited: false,
        killed: false,
    });

    // Reap the script and record how it ended (visible in `GET /admin/state`). The instance
    // stays `running` after the script ends, as a real machine would.
    // The reaper holds the state weakly so a stopped server is not kept alive by a script.
    let weak = state.weak();
    let id = inst.id.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = g
            .instances
            .get_mut(&id)
            .and_then(|i| i.process.as_mut())
            .filter(|p| p.pid == pid)
        {
            p.exited = true;
            p.exit_code = status.ok().and_then(|s| s.code());
        }
        tracing::info!(%id, pid, "startup script exited");
    });
    Ok(())
}

/// SIGKILLs the instance's script process group, once. Synchronous (waits for `kill`) so that
/// when a delete has been answered, the processes are gone.
pub fn kill(inst: &mut Instance) {
    let Some(p) = inst.process.as_mut() else {
        return;
    };
    if p.killed {
        return;
    }
    p.killed = true;
    // Even if bash itself has exited, background jobs may still live in its group.
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

fn write_executable(path: &Path, content: &str) -> io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(content.as_bytes())?;
    drop(f);
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
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
