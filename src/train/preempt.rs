//! Preemption: stop signals (Slurm's SIGTERM, `--signal=USR1@120`, Ctrl-C) turned into a
//! request that the long-running loops (training, discriminator training, generation, FID)
//! honour at their next safe point — after an optimizer step or a batch — and a second
//! signal that aborts at once.
//!
//! The handlers are signal-hook's standard two-signal pattern: each stop signal first
//! checks the "requested" flag and, when it is already set, terminates the process
//! ([`signal_hook::flag::register_conditional_shutdown`], exit code 1); otherwise it sets
//! the flag ([`signal_hook::flag::register`]) and records which signal it was. Files stay
//! consistent on an abort because every state and snapshot is written to a temporary name
//! and renamed into place.
//!
//! The flags are process-global (signals are): [`requested`] is `None` until a stop signal
//! arrives, and always `None` when [`install`] was never called (library use, tests).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum PreemptError {
    /// A name in `--stop-signals` that is not a supported signal.
    #[error("--stop-signals: unknown signal {0:?} (use TERM, INT, USR1, USR2, HUP, QUIT)")]
    Unknown(String),
    /// A signal that cannot be handled (signal-hook refuses it).
    #[error("cannot install a handler for SIG{name}: {error}")]
    Install {
        /// The signal's name.
        name: String,
        /// What failed.
        error: std::io::Error,
    },
}

/// The stop signals to handle, by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSignals(pub Vec<i32>);

impl Default for StopSignals {
    fn default() -> Self {
        StopSignals(vec![libc::SIGTERM, libc::SIGINT, libc::SIGUSR1])
    }
}

const NAMES: [(&str, i32); 6] = [
    ("TERM", libc::SIGTERM),
    ("INT", libc::SIGINT),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("HUP", libc::SIGHUP),
    ("QUIT", libc::SIGQUIT),
];

/// `SIGTERM`-style name of a signal number (`SIG<n>` when unknown).
pub fn signal_name(sig: i32) -> String {
    NAMES
        .iter()
        .find(|(_, n)| *n == sig)
        .map(|(s, _)| format!("SIG{s}"))
        .unwrap_or_else(|| format!("SIG{sig}"))
}

impl std::str::FromStr for StopSignals {
    type Err = PreemptError;
    /// `TERM,INT,USR1` (with or without the `SIG` prefix, any case); `none` for no handler.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(StopSignals(vec![]));
        }
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let up = part.to_ascii_uppercase();
            let bare = up.strip_prefix("SIG").unwrap_or(&up);
            let sig = NAMES
                .iter()
                .find(|(n, _)| *n == bare)
                .map(|(_, s)| *s)
                .ok_or_else(|| PreemptError::Unknown(part.to_string()))?;
            if !out.contains(&sig) {
                out.push(sig);
            }
        }
        Ok(StopSignals(out))
    }
}

struct Flags {
    requested: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

fn flags() -> &'static Flags {
    FLAGS.get_or_init(|| Flags {
        requested: Arc::new(AtomicBool::new(false)),
        which: Arc::new(AtomicUsize::new(0)),
    })
}

/// Set (to 1) by `tiw launch` (src/launch.rs) in its ranks' environment: the launcher forwards the first stop
/// signal and kills the ranks on a second one, so a rank treats every signal as a stop
/// request (a cluster that signals every process of a job, launcher and ranks alike, then
/// does not abort the ranks by accident).
pub const LAUNCHED_ENV: &str = "TIW_LAUNCHED";

/// Installs the handlers for `signals` (call once, early in `main` of a command). Under
/// `tiw launch` (see [`LAUNCHED_ENV`]) a second signal does not exit: the launcher escalates.
pub fn install(signals: &StopSignals) -> Result<(), PreemptError> {
    let f = flags();
    let launched = std::env::var_os(LAUNCHED_ENV).is_some();
    for &sig in &signals.0 {
        let err = |error| PreemptError::Install {
            name: signal_name(sig),
            error,
        };
        // order matters: the shutdown check runs before the flag is set, so the first
        // signal only sets it and the second one exits
        if !launched {
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&f.requested))
                .map_err(err)?;
        }
        signal_hook::flag::register_usize(sig, Arc::clone(&f.which), sig as usize).map_err(err)?;
        signal_hook::flag::register(sig, Arc::clone(&f.requested)).map_err(err)?;
    }
    Ok(())
}

/// The stop signal received (its name, e.g. `SIGTERM`), if any.
pub fn requested() -> Option<String> {
    let f = flags();
    f.requested
        .load(Ordering::SeqCst)
        .then(|| signal_name(f.which.load(Ordering::SeqCst) as i32))
}

/// Asks the loops to stop as if `sig` had arrived (tests, in-process callers).
pub fn request(sig: i32) {
    let f = flags();
    f.which.store(sig as usize, Ordering::SeqCst);
    f.requested.store(true, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signal_lists() {
        let s: StopSignals = "TERM, sigint,USR1".parse().unwrap();
        assert_eq!(s, StopSignals::default());
        assert!("none".parse::<StopSignals>().unwrap().0.is_empty());
        assert!("KILL".parse::<StopSignals>().is_err());
        assert_eq!(signal_name(libc::SIGUSR1), "SIGUSR1");
    }
}
