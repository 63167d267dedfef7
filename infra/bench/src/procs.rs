//! Child processes: spawned from one long-lived thread with `PR_SET_PDEATHSIG` (which fires when
//! the spawning *thread* exits), so every process the bench starts dies with it; stopped only by
//! their own pid.

use anyhow::{anyhow, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

type Reply = tokio::sync::oneshot::Sender<std::io::Result<(Child, Instant)>>;

/// Spawns `command`; returns the child and the instant just before the spawn.
pub async fn spawn(command: Command, death_signal: i32) -> Result<(Child, Instant)> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<(Command, i32, Reply)>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, i32, Reply)>();
        std::thread::spawn(move || {
            for (mut command, signal, reply) in rx {
                use std::os::unix::process::CommandExt;
                // SAFETY: prctl is async-signal-safe and touches only the child.
                unsafe {
                    command.pre_exec(move || {
                        libc::prctl(libc::PR_SET_PDEATHSIG, signal);
                        Ok(())
                    });
                }
                let started = Instant::now();
                let _ = reply.send(command.spawn().map(|c| (c, started)));
            }
        });
        Mutex::new(tx)
    });
    let program = command.get_program().to_string_lossy().into_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    sender
        .lock()
        .unwrap()
        .send((command, death_signal, tx))
        .map_err(|_| anyhow!("spawner thread is gone"))?;
    rx.await?.with_context(|| format!("spawning {program}"))
}

/// Stops a child we started: `signal` first, SIGKILL after `grace`.
pub fn stop(child: &mut Child, signal: i32, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Peak resident set size (`VmHWM`) of a live process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
}

/// Reads the first line of the child's stdout (a server's `... listening on http://ADDR`),
/// then keeps draining it on a thread so that the child never blocks on a full pipe.
pub fn read_listen_url(child: &mut Child, what: &str) -> Result<String> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("{what}: stdout not piped"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        for _ in reader.lines() {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| anyhow!("{what} did not print its address within 60 s"))?;
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{what} did not print its address (got {line:?})"))
}

pub async fn wait_for_tcp(port: u16, what: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err(anyhow!("{what} did not start on port {port}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An append-mode log file for a child's output.
pub fn log_file(dir: &Path, name: &str) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .with_context(|| format!("opening {name}.log"))
}
