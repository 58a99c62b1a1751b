//! Where a process sits in a multi-process run: read from the variables that torchrun
//! (and `tiw launch`) or Slurm's `srun` set.

use super::DistError;

/// Which launcher's variables described this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvSource {
    /// torchrun, `tiw launch`, or any launcher using PyTorch's `env://` variables.
    Torchrun,
    /// Slurm (`srun`): `SLURM_PROCID`, `SLURM_NTASKS`, ...
    Slurm,
}

/// This process's place in the run and the rendezvous address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes in the run.
    pub world_size: usize,
    /// Rank among the processes of this node (selects the CUDA device).
    pub local_rank: usize,
    /// Number of processes on this node.
    pub local_world_size: usize,
    /// Host of rank 0's TCPStore.
    pub master_addr: String,
    /// Port of rank 0's TCPStore.
    pub master_port: u16,
    /// The launcher whose variables were read.
    pub source: EnvSource,
    /// The store at `MASTER_ADDR:MASTER_PORT` already runs in torchrun's agent
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`): rank 0 connects to it instead of hosting one.
    pub agent_store: bool,
}

/// First port of the range that Slurm runs without MASTER_PORT derive from the job id
/// (`SLURM_JOB_ID % SLURM_PORT_SPAN` is added): below Linux's ephemeral port range.
pub const SLURM_PORT_BASE: u16 = 20000;
/// Width of the derived Slurm port range.
pub const SLURM_PORT_SPAN: u64 = 10000;

impl LaunchEnv {
    /// Reads the process environment; see [`LaunchEnv::from_vars`].
    pub fn from_env() -> Result<Option<LaunchEnv>, DistError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// torchrun's `RANK`/`WORLD_SIZE`/`LOCAL_RANK`/`LOCAL_WORLD_SIZE`/`MASTER_ADDR`/
    /// `MASTER_PORT` when `RANK` or `WORLD_SIZE` is set (`LOCAL_RANK`/`LOCAL_WORLD_SIZE`
    /// default to `RANK`/`WORLD_SIZE`, i.e. one node; `TORCHELASTIC_USE_AGENT_STORE=True`
    /// sets [`LaunchEnv::agent_store`]); otherwise Slurm's `SLURM_PROCID`/
    /// `SLURM_NTASKS`/`SLURM_LOCALID` (the step's `SLURM_STEP_NUM_TASKS` first when set),
    /// the tasks of this node from `SLURM_NTASKS_PER_NODE` or `SLURM_(STEP_)TASKS_PER_NODE`
    /// (`2(x3),1` form, indexed by `SLURM_NODEID`), and `MASTER_ADDR`/`MASTER_PORT` or else
    /// the first host of `SLURM_STEP_NODELIST`/`SLURM_JOB_NODELIST` and port
    /// [`SLURM_PORT_BASE`]` + SLURM_JOB_ID % `[`SLURM_PORT_SPAN`]. `Ok(None)` when neither
    /// launcher is present; a missing, garbled or inconsistent value is an error naming
    /// the variable. `get` returns a variable's value (a map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchEnv>, DistError> {
        let get = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let env = if get("RANK").is_some() || get("WORLD_SIZE").is_some() {
            torchrun(&get)?
        } else if get("SLURM_PROCID").is_some() {
            slurm(&get)?
        } else {
            return Ok(None);
        };
        env.check()?;
        Ok(Some(env))
    }

    fn check(&self) -> Result<(), DistError> {
        let (rank_var, world_var, local_var, lws_var) = match self.source {
            EnvSource::Torchrun => ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
            EnvSource::Slurm => (
                "SLURM_PROCID",
                "SLURM_NTASKS",
                "SLURM_LOCALID",
                "SLURM_NTASKS_PER_NODE",
            ),
        };
        if self.world_size == 0 {
            return Err(bad(world_var, "0", "must be at least 1"));
        }
        if self.rank >= self.world_size {
            return Err(bad(
                rank_var,
                &self.rank.to_string(),
                &format!("must be below {world_var}={}", self.world_size),
            ));
        }
        if self.local_world_size == 0 || self.local_world_size > self.world_size {
            return Err(bad(
                lws_var,
                &self.local_world_size.to_string(),
                &format!("must be between 1 and {world_var}={}", self.world_size),
            ));
        }
        if self.local_rank >= self.local_world_size {
            return Err(bad(
                local_var,
                &self.local_rank.to_string(),
                &format!(
                    "must be below the {} process(es) of this node",
                    self.local_world_size
                ),
            ));
        }
        Ok(())
    }
}

fn bad(var: &str, value: &str, reason: &str) -> DistError {
    DistError::Env {
        var: var.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn missing(var: &str, launcher: &str) -> DistError {
    DistError::MissingVar {
        var: var.to_string(),
        launcher: launcher.to_string(),
    }
}

fn parse_num<T: std::str::FromStr>(var: &str, v: &str) -> Result<T, DistError> {
    v.parse()
        .map_err(|_| bad(var, v, "not a non-negative integer in range"))
}

fn required<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
    launcher: &str,
) -> Result<T, DistError> {
    let v = get(var).ok_or_else(|| missing(var, launcher))?;
    parse_num(var, &v)
}

fn optional<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
) -> Result<Option<T>, DistError> {
    get(var).map(|v| parse_num(var, &v)).transpose()
}

fn port(var: &str, v: &str) -> Result<u16, DistError> {
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(var, v, "not a TCP port (1-65535)")),
    }
}

fn torchrun(get: &impl Fn(&str) -> Option<String>) -> Result<LaunchEnv, DistError> {
    const L: &str = "torchrun-style launch (RANK/WORLD_SIZE set)";
    let rank = required(get, "RANK", L)?;
    let world_size = required(get, "WORLD_SIZE", L)?;
    let master_addr = get("MASTER_ADDR").ok_or_else(|| missing("MASTER_ADDR", L))?;
    let p = get("MASTER_PORT").ok_or_else(|| missing("MASTER_PORT", L))?;
    Ok(LaunchEnv {
        rank,
        world_size,
        local_rank: optional(get, "LOCAL_RANK")?.unwrap_or(rank),
        local_world_size: optional(get, "LOCAL_WORLD_SIZE")?.unwrap_or(world_size),
        master_addr,
        master_port: port("MASTER_PORT", &p)?,
        source: EnvSource::Torchrun,
        agent_store: get("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True"),
    })
}

fn slurm(get: &impl Fn(&str) -> Option<String>) -> Result<LaunchEnv, DistError> {
    const L: &str = "a Slurm task (SLURM_PROCID set)";
    let rank = required(get, "SLURM_PROCID", L)?;
    let world_size = match optional(get, "SLURM_STEP_NUM_TASKS")? {
        Some(n) => n,
        None => required(get, "SLURM_NTASKS", L)?,
    };
    let local_rank = required(get, "SLURM_LOCALID", L)?;
    let local_world_size = if let Some(n) = optional(get, "SLURM_NTASKS_PER_NODE")? {
        n
    } else {
        let var = ["SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"]
            .into_iter()
            .find(|v| get(v).is_some())
            .ok_or_else(|| missing("SLURM_NTASKS_PER_NODE or SLURM_TASKS_PER_NODE", L))?;
        let counts = tasks_per_node(var, &get(var).unwrap_or_default())?;
        let node: usize = optional(get, "SLURM_NODEID")?.unwrap_or(0);
        *counts.get(node).ok_or_else(|| {
            bad(
                "SLURM_NODEID",
                &node.to_string(),
                &format!("{var} lists only {} node(s)", counts.len()),
            )
        })?
    };
    let master_addr = match get("MASTER_ADDR") {
        Some(a) => a,
        None => {
            let var = ["SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"]
                .into_iter()
                .find(|v| get(v).is_some())
                .ok_or_else(|| missing("MASTER_ADDR or SLURM_JOB_NODELIST", L))?;
            first_host(var, &get(var).unwrap_or_default())?
        }
    };
    let master_port = match get("MASTER_PORT") {
        Some(p) => port("MASTER_PORT", &p)?,
        None => {
            let job: u64 = required(get, "SLURM_JOB_ID", "a Slurm task without MASTER_PORT")?;
            SLURM_PORT_BASE + (job % SLURM_PORT_SPAN) as u16
        }
    };
    Ok(LaunchEnv {
        rank,
        world_size,
        local_rank,
        local_world_size,
        master_addr,
        master_port,
        source: EnvSource::Slurm,
        agent_store: false,
    })
}

/// Expands Slurm's compressed per-node task counts: `2(x3),1` -> `[2, 2, 2, 1]`.
pub fn tasks_per_node(var: &str, v: &str) -> Result<Vec<usize>, DistError> {
    let garbled = || bad(var, v, "expected per-node task counts such as `4` or `2(x3),1`");
    let mut out = Vec::new();
    for part in v.split(',') {
        let (count, times) = match part.split_once("(x") {
            Some((c, rest)) => (c, rest.strip_suffix(')').ok_or_else(garbled)?),
            None => (part, "1"),
        };
        let count: usize = count.parse().map_err(|_| garbled())?;
        let times: usize = times.parse().map_err(|_| garbled())?;
        if times > 100_000 {
            return Err(garbled());
        }
        out.extend(std::iter::repeat_n(count, times));
    }
    if out.is_empty() {
        return Err(garbled());
    }
    Ok(out)
}

/// The first host of a Slurm host list: `gpu[003-005,009],cpu1` -> `gpu003`.
pub fn first_host(var: &str, list: &str) -> Result<String, DistError> {
    let garbled = || bad(var, list, "expected a Slurm host list such as `node[01-04],gpu7`");
    // The first entry ends at the first comma outside brackets.
    let mut depth = 0usize;
    let end = list
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map_or(list.len(), |(i, _)| i);
    let entry = &list[..end];
    let host = match entry.split_once('[') {
        None => entry.to_string(),
        Some((prefix, rest)) => {
            let (ranges, suffix) = rest.split_once(']').ok_or_else(garbled)?;
            let first = ranges.split(',').next().unwrap_or("");
            let first = first.split('-').next().unwrap_or("");
            if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) || suffix.contains('[') {
                return Err(garbled());
            }
            format!("{prefix}{first}{suffix}")
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == ']') {
        return Err(garbled());
    }
    Ok(host)
}
