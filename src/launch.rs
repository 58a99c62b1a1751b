//! `tiw launch`: torchrun for users without Python. Starts this node's ranks as `tiw
//! <subcommand> ...` with torchrun's environment, prefixes their output with `[rank R] `
//! (rank 0 unprefixed), forwards SIGINT/SIGTERM, and when a rank fails stops the others
//! (SIGTERM, then SIGKILL after a grace period) and reports which rank failed.
//!
//! Part of the light `tiw` binary: no libtorch here.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Arguments of `tiw launch`.
#[derive(Debug, clap::Args)]
pub struct LaunchArgs {
    /// Processes (ranks) to start on this node.
    #[arg(long, alias = "nproc_per_node", default_value_t = 1)]
    pub nproc_per_node: usize,
    /// Number of nodes taking part (each runs its own `tiw launch`).
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This node's index, 0..NNODES (node 0 hosts the rendezvous).
    #[arg(long, alias = "node_rank", default_value_t = 0)]
    pub node_rank: usize,
    /// Address of node 0, reachable from every node (default with one node: 127.0.0.1).
    #[arg(long, alias = "master_addr")]
    pub master_addr: Option<String>,
    /// Rendezvous port on node 0 (default with one node: a free port).
    #[arg(long, alias = "master_port")]
    pub master_port: Option<u16>,
    /// One node, rendezvous on 127.0.0.1 at a free port (the single-node default).
    #[arg(long)]
    pub standalone: bool,
    /// Seconds the other ranks get to exit after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10.0)]
    pub grace_secs: f64,
    /// The tiw subcommand and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "SUBCOMMAND")]
    pub command: Vec<OsString>,
}

/// The last SIGINT/SIGTERM/SIGUSR1 received (0: none since the last forward).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// A started rank.
struct Rank {
    rank: usize,
    pid: libc::pid_t,
    done: Option<ExitStatus>,
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}{}", signal_name(s)),
        _ => format!("ended with {status}"),
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGINT => " (SIGINT)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGUSR1 => " (SIGUSR1)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        _ => "",
    }
}

/// A free TCP port on `addr` (released at once for rank 0's store to take).
fn free_port(addr: &str) -> Result<u16> {
    let l = std::net::TcpListener::bind((addr, 0))
        .or_else(|_| std::net::TcpListener::bind(("0.0.0.0", 0)))
        .context("cannot find a free port for the rendezvous")?;
    Ok(l.local_addr()?.port())
}

/// Copies `from` to our stdout or stderr line by line, each line prefixed.
fn relay(from: impl Read + Send + 'static, prefix: String, to_stderr: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line.last() != Some(&b'\n') {
                        line.push(b'\n');
                    }
                    let mut out = Vec::with_capacity(prefix.len() + line.len());
                    out.extend_from_slice(prefix.as_bytes());
                    out.extend_from_slice(&line);
                    // One write per line (under the stream's lock): lines never interleave.
                    let _ = if to_stderr {
                        std::io::stderr().lock().write_all(&out)
                    } else {
                        std::io::stdout().lock().write_all(&out)
                    };
                }
            }
        }
    })
}

/// Checks the options; returns the rendezvous address and port.
fn rendezvous(a: &LaunchArgs) -> Result<(String, u16)> {
    if a.nproc_per_node == 0 || a.nnodes == 0 {
        bail!("--nproc-per-node and --nnodes must be at least 1");
    }
    if a.node_rank >= a.nnodes {
        bail!("--node-rank {} is not below --nnodes {}", a.node_rank, a.nnodes);
    }
    if !(a.grace_secs.is_finite() && a.grace_secs >= 0.0) {
        bail!("--grace-secs must be a non-negative number");
    }
    if a.nnodes > 1 {
        if a.standalone {
            bail!("--standalone runs one node; drop it or --nnodes");
        }
        return match (&a.master_addr, a.master_port) {
            (Some(h), Some(p)) => Ok((h.clone(), p)),
            _ => bail!(
                "--nnodes {}: give --master-addr and --master-port (node 0's address and a port open on it)",
                a.nnodes
            ),
        };
    }
    let addr = if a.standalone { None } else { a.master_addr.clone() };
    let addr = addr.unwrap_or_else(|| "127.0.0.1".to_string());
    let port = match (a.standalone, a.master_port) {
        (false, Some(p)) => p,
        _ => free_port(&addr)?,
    };
    Ok((addr, port))
}

/// The command line of local rank `local`: torchrun's environment for it.
fn rank_command(a: &LaunchArgs, tiw: &PathBuf, local: usize, addr: &str, port: u16) -> Command {
    let rank = a.node_rank * a.nproc_per_node + local;
    let world = a.nnodes * a.nproc_per_node;
    let mut cmd = Command::new(tiw);
    cmd.args(&a.command)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", local.to_string())
        .env("LOCAL_WORLD_SIZE", a.nproc_per_node.to_string())
        .env("GROUP_RANK", a.node_rank.to_string())
        .env("GROUP_WORLD_SIZE", a.nnodes.to_string())
        .env("MASTER_ADDR", addr)
        .env("MASTER_PORT", port.to_string())
        // the ranks' stop-signal handlers leave a second signal to us (see `Supervisor`)
        .env("TIW_LAUNCHED", "1")
        // our ranks host their own store (torchrun's agent store is not running here)
        .env_remove("TORCHELASTIC_USE_AGENT_STORE");
    // Several ranks share the node's cores: one thread each unless told otherwise.
    if a.nproc_per_node > 1 && std::env::var_os("OMP_NUM_THREADS").is_none() {
        cmd.env("OMP_NUM_THREADS", "1");
    }
    if rank != 0 {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    cmd
}

/// The running ranks of this node and what happened to them.
struct Supervisor {
    ranks: Vec<Rank>,
    relays: Vec<std::thread::JoinHandle<()>>,
    grace: Duration,
    /// The first rank that failed (not after an interrupt), with how.
    failed: Option<(usize, String)>,
    /// The first signal received and forwarded.
    interrupted: Option<i32>,
    /// When the ranks still running get SIGKILL.
    kill_at: Option<Instant>,
}

impl Supervisor {
    /// Sends `sig` to every rank still running.
    fn signal_all(&self, sig: libc::c_int) {
        for r in self.ranks.iter().filter(|r| r.done.is_none()) {
            // SAFETY: kill(2) on a child that has not been reaped yet (its pid is still ours).
            unsafe { libc::kill(r.pid, sig) };
        }
    }

    /// SIGTERM to the ranks still running, SIGKILL after the grace period.
    fn stop_all(&mut self) {
        self.signal_all(libc::SIGTERM);
        self.kill_at = Some(Instant::now() + self.grace);
    }

    /// Starts local rank `local`; a waiter thread reports its exit on `tx`.
    fn spawn(
        &mut self,
        mut cmd: Command,
        rank: usize,
        tx: &mpsc::Sender<(usize, std::io::Result<ExitStatus>)>,
    ) -> std::io::Result<()> {
        let mut child = cmd.spawn()?;
        let prefix = format!("[rank {rank}] ");
        if let Some(o) = child.stdout.take() {
            self.relays.push(relay(o, prefix.clone(), false));
        }
        if let Some(e) = child.stderr.take() {
            self.relays.push(relay(e, prefix, true));
        }
        self.ranks.push(Rank {
            rank,
            pid: child.id() as libc::pid_t,
            done: None,
        });
        let tx = tx.clone();
        // One waiter per rank: exits are reported in the order they happen.
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send((rank, status));
        });
        Ok(())
    }

    /// Forwards the first signal (preemption: the ranks finish their step and write a
    /// state); a second one kills them at once.
    fn forward_signals(&mut self) {
        let sig = SIGNAL.swap(0, Ordering::SeqCst);
        if sig == 0 {
            return;
        }
        if self.interrupted.is_none() {
            self.interrupted = Some(sig);
            self.signal_all(sig);
        } else {
            self.signal_all(libc::SIGKILL);
        }
    }

    /// Records rank `rank`'s exit; the first failure stops the others.
    fn exited(&mut self, rank: usize, status: std::io::Result<ExitStatus>) {
        let i = self
            .ranks
            .iter()
            .position(|r| r.rank == rank)
            .expect("a started rank");
        // wait(2) itself failing is not expected; count it as the rank failing rather than
        // leaving the others running.
        let status = status.unwrap_or_else(|e| {
            eprintln!("tiw launch: waiting for rank {rank}: {e}");
            ExitStatus::from_raw(1 << 8)
        });
        self.ranks[i].done = Some(status);
        if !status.success() && self.failed.is_none() && self.interrupted.is_none() {
            self.failed = Some((rank, describe(status)));
            self.stop_all();
        }
    }

    /// Waits until every rank has exited, forwarding signals and enforcing the grace period.
    fn wait_all(&mut self, rx: &mpsc::Receiver<(usize, std::io::Result<ExitStatus>)>) {
        while self.ranks.iter().any(|r| r.done.is_none()) {
            self.forward_signals();
            if self.kill_at.is_some_and(|t| Instant::now() >= t) {
                self.signal_all(libc::SIGKILL);
                self.kill_at = None;
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((rank, status)) => self.exited(rank, status),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        for r in self.relays.drain(..) {
            let _ = r.join();
        }
    }

    /// The launcher's exit status, with a line saying why when it is not 0.
    fn exit_code(&self) -> i32 {
        if let Some(sig) = self.interrupted {
            if self.ranks.iter().all(|r| r.done.is_some_and(|s| s.success())) {
                eprintln!(
                    "tiw launch: signal {sig}{} forwarded; every rank stopped cleanly",
                    signal_name(sig)
                );
                return 0;
            }
            eprintln!(
                "tiw launch: interrupted by signal {sig}{}; ranks stopped",
                signal_name(sig)
            );
            return 128 + sig;
        }
        let Some((rank, what)) = &self.failed else {
            return 0;
        };
        let others: Vec<String> = self
            .ranks
            .iter()
            .filter(|r| r.rank != *rank)
            .filter_map(|r| {
                r.done
                    .filter(|s| !s.success())
                    .map(|s| format!("rank {} {}", r.rank, describe(s)))
            })
            .collect();
        let rest = if others.is_empty() {
            String::new()
        } else {
            format!(" (then: {})", others.join(", "))
        };
        eprintln!("error: tiw launch: rank {rank} {what}{rest}");
        1
    }
}

/// Runs `tiw launch`; returns the process exit status to use.
pub fn launch(a: &LaunchArgs) -> Result<i32> {
    let (addr, port) = rendezvous(a)?;
    let exe = std::env::current_exe().context("cannot locate the tiw binary")?;
    let tiw: PathBuf = exe.parent().map(|d| d.join("tiw")).unwrap_or(exe);

    // SAFETY: installs an async-signal-safe handler (a single atomic store).
    unsafe {
        let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
        libc::signal(libc::SIGUSR1, h);
    }

    let (tx, rx) = mpsc::channel::<(usize, std::io::Result<ExitStatus>)>();
    let mut sup = Supervisor {
        ranks: Vec::new(),
        relays: Vec::new(),
        grace: Duration::from_secs_f64(a.grace_secs),
        failed: None,
        interrupted: None,
        kill_at: None,
    };
    let mut spawn_error = None;
    for local in 0..a.nproc_per_node {
        let rank = a.node_rank * a.nproc_per_node + local;
        let cmd = rank_command(a, &tiw, local, &addr, port);
        if let Err(e) = sup.spawn(cmd, rank, &tx) {
            spawn_error = Some(anyhow::anyhow!(
                "cannot start rank {rank} ({}): {e}",
                tiw.display()
            ));
            sup.stop_all();
            break;
        }
    }
    drop(tx);
    sup.wait_all(&rx);
    if let Some(e) = spawn_error {
        return Err(e);
    }
    Ok(sup.exit_code())
}
