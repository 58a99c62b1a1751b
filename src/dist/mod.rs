//! Data parallelism on PyTorch's distributed engine (c10d), the one behind
//! `torch.distributed` and DDP: a TCPStore rendezvous and a Gloo (CPU, or CUDA tensors
//! through host staging) or NCCL (CUDA, cargo feature `nccl`) process group, reached through
//! a small C++ shim (`csrc/c10d_shim.cpp`, compiled by build.rs against tch's libtorch).
//!
//! A run is started by torchrun, `tiw launch` or Slurm; [`LaunchEnv`] reads where this
//! process sits, [`ProcessGroup::connect`] joins the others. Every blocking call is bounded
//! by the group's timeout: a dead or hung peer becomes an error, never a hang or an abort.

mod env;

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

pub use env::{first_host, tasks_per_node, EnvSource, LaunchEnv, SLURM_PORT_BASE, SLURM_PORT_SPAN};

/// PyTorch's default process-group timeout (30 minutes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Bucket size of the all-reduce / broadcast packing (DDP's default `bucket_cap_mb`, 25 MiB).
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Errors of the distributed layer.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launcher variable is garbled or inconsistent with the others.
    #[error("{var}={value:?}: {reason}")]
    Env {
        /// The variable's name.
        var: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A variable the detected launcher always sets is missing.
    #[error("{var} is not set (needed for {launcher})")]
    MissingVar {
        /// The variable's name.
        var: String,
        /// Which launcher was detected.
        launcher: String,
    },
    /// The request cannot be served by this build or device (e.g. NCCL without the feature).
    #[error("{0}")]
    Unsupported(String),
    /// The rendezvous or the backend's set-up failed (no server, timeout, ...).
    #[error(
        "rank {rank}/{world_size}: cannot join the process group at {addr}:{port} ({backend}): {message}"
    )]
    Connect {
        /// This process's rank.
        rank: usize,
        /// The run's size.
        world_size: usize,
        /// Rendezvous host.
        addr: String,
        /// Rendezvous port.
        port: u16,
        /// The backend being built.
        backend: Backend,
        /// c10d's message.
        message: String,
    },
    /// A collective failed (peer gone, timeout, bad tensor, ...).
    #[error("rank {rank}/{world_size} ({backend}): {op} failed: {message}")]
    Collective {
        /// This process's rank.
        rank: usize,
        /// The run's size.
        world_size: usize,
        /// The group's backend.
        backend: Backend,
        /// The operation (`all_reduce`, `broadcast`, `barrier`, ...).
        op: &'static str,
        /// c10d's (or our) message.
        message: String,
    },
    /// A libtorch error while packing or unpacking tensors.
    #[error("tensor operation: {0}")]
    Tensor(#[from] tch::TchError),
}

/// The `--dist-backend` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendChoice {
    /// NCCL on CUDA devices (Gloo when this build has no NCCL), Gloo on the CPU.
    #[default]
    Auto,
    /// Gloo: CPU tensors, or CUDA tensors staged through host memory.
    Gloo,
    /// NCCL: CUDA tensors only; needs a build with `--features nccl`.
    Nccl,
}

/// A resolved communication backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// c10d's ProcessGroupGloo.
    Gloo,
    /// c10d's ProcessGroupNCCL.
    Nccl,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        })
    }
}

/// Whether this build contains the NCCL backend (cargo feature `nccl`).
pub fn has_nccl() -> bool {
    // SAFETY: a constant query without arguments.
    unsafe { ffi::tiw_c10d_has_nccl() != 0 }
}

fn no_nccl() -> DistError {
    DistError::Unsupported("this build has no NCCL support: rebuild with --features nccl".into())
}

impl BackendChoice {
    /// The backend for tensors on `device`: `Auto` gives NCCL on CUDA when built in, else
    /// Gloo; `Nccl` fails on the CPU or without the `nccl` feature.
    pub fn resolve(self, device: Device) -> Result<Backend, DistError> {
        let cuda = matches!(device, Device::Cuda(_));
        match self {
            BackendChoice::Auto if cuda && has_nccl() => Ok(Backend::Nccl),
            BackendChoice::Auto | BackendChoice::Gloo => Ok(Backend::Gloo),
            BackendChoice::Nccl if !has_nccl() => Err(no_nccl()),
            BackendChoice::Nccl if !cuda => Err(DistError::Unsupported(format!(
                "the NCCL backend needs a CUDA device (got {device:?}); use --dist-backend gloo on the CPU"
            ))),
            BackendChoice::Nccl => Ok(Backend::Nccl),
        }
    }
}

/// The device a rank should use: under a launcher a CUDA request means `cuda:LOCAL_RANK`
/// (or `cuda:0` when `CUDA_VISIBLE_DEVICES` leaves this process a single GPU, as Slurm's
/// GPU binding does); anything else is returned unchanged.
pub fn local_device(requested: Device, env: Option<&LaunchEnv>) -> Device {
    match (requested, env) {
        (Device::Cuda(_), Some(e)) => {
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
            let single = visible.is_some_and(|v| !v.trim().is_empty() && !v.contains(','));
            Device::Cuda(if single { 0 } else { e.local_rank })
        }
        (d, _) => d,
    }
}

/// Connects when [`LaunchEnv::from_env`] finds a launcher with more than one process;
/// `Ok(None)` without a launcher or for a one-process run (see [`init_from_env_with`]).
/// `device` is the one requested (mapped by [`local_device`]).
pub fn init_from_env(
    choice: BackendChoice,
    device: Device,
    timeout: Duration,
) -> Result<Option<ProcessGroup>, DistError> {
    init_from_env_with(choice, device, timeout, false)
}

/// As [`init_from_env`]; `force_single` also connects a one-process run (which then still
/// goes through the rendezvous and the backend: useful for checks).
pub fn init_from_env_with(
    choice: BackendChoice,
    device: Device,
    timeout: Duration,
    force_single: bool,
) -> Result<Option<ProcessGroup>, DistError> {
    let Some(env) = LaunchEnv::from_env()? else {
        return Ok(None);
    };
    if env.world_size == 1 && !force_single {
        return Ok(None);
    }
    let device = local_device(device, Some(&env));
    let backend = choice.resolve(device)?;
    ProcessGroup::connect(&env, backend, device, timeout).map(Some)
}

mod ffi {
    use super::*;

    #[repr(C)]
    pub struct RawPg {
        _private: [u8; 0],
    }

    extern "C" {
        pub fn tiw_c10d_last_error() -> *const c_char;
        pub fn tiw_c10d_has_nccl() -> c_int;
        pub fn tiw_c10d_connect(
            backend: c_int,
            master_addr: *const c_char,
            master_port: u16,
            rank: c_int,
            world_size: c_int,
            host_store: c_int,
            device_index: c_int,
            timeout_ms: i64,
        ) -> *mut RawPg;
        pub fn tiw_c10d_shutdown(pg: *mut RawPg) -> c_int;
        pub fn tiw_c10d_free(pg: *mut RawPg);
        pub fn tiw_c10d_all_reduce_sum(pg: *mut RawPg, tensors: *const *mut C_tensor, n: usize) -> c_int;
        pub fn tiw_c10d_broadcast(
            pg: *mut RawPg,
            tensors: *const *mut C_tensor,
            n: usize,
            root: c_int,
        ) -> c_int;
        pub fn tiw_c10d_barrier(pg: *mut RawPg) -> c_int;
        pub fn tiw_set_grad(param: *mut C_tensor, grad: *mut C_tensor) -> c_int;
    }

    /// The calling thread's last shim error.
    pub fn last_error() -> String {
        // SAFETY: the shim returns a NUL-terminated thread-local string, valid until the
        // thread's next shim call; it is copied at once.
        let msg = unsafe { CStr::from_ptr(tiw_c10d_last_error()) }.to_string_lossy();
        tidy(&msg)
    }

    /// Drops the `[/build/path/file.cc:123] ` source location that gloo puts first.
    pub fn tidy(msg: &str) -> String {
        let msg = msg.trim();
        if let Some((loc, rest)) = msg.strip_prefix('[').and_then(|m| m.split_once("] ")) {
            let is_location = loc.rsplit_once(':').is_some_and(|(file, line)| {
                file.contains('.') && !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit())
            });
            if is_location && !rest.is_empty() {
                return rest.to_string();
            }
        }
        msg.to_string()
    }
}

/// A joined process group: this process's rank in a run of `world_size` processes.
/// Dropping it shuts the backend down and closes the connections.
pub struct ProcessGroup {
    raw: NonNull<ffi::RawPg>,
    rank: usize,
    world_size: usize,
    backend: Backend,
    /// Device of the small internal buffers (all_gather_f64): CUDA for NCCL, else the CPU.
    scratch: Device,
    /// The bound on the rendezvous and on each collective.
    timeout: Duration,
}

// SAFETY: the c10d objects behind `raw` are not tied to the thread that created them
// (torch.distributed uses them from any thread); `&mut`-free methods only issue
// collectives, which c10d serialises itself. ProcessGroup is not Sync all the same:
// collectives must be issued in the same order on every rank.
unsafe impl Send for ProcessGroup {}

/// Which collective to run on a list of (contiguous) buffers.
#[derive(Clone, Copy)]
enum Op {
    Sum,
    Broadcast(usize),
}

impl ProcessGroup {
    /// Joins the run: rank 0 hosts a TCPStore on `MASTER_ADDR:MASTER_PORT` (unless
    /// torchrun's agent already does: [`LaunchEnv::agent_store`]), every rank connects to
    /// it, then the Gloo or NCCL backend is built. `device` is this rank's device (NCCL: its
    /// CUDA device; Gloo: any). `timeout` bounds the rendezvous and every later collective.
    pub fn connect(
        env: &LaunchEnv,
        backend: Backend,
        device: Device,
        timeout: Duration,
    ) -> Result<ProcessGroup, DistError> {
        let device_index = match (backend, device) {
            (Backend::Nccl, _) if !has_nccl() => return Err(no_nccl()),
            (Backend::Nccl, Device::Cuda(i)) => i as c_int,
            (Backend::Nccl, d) => {
                return Err(DistError::Unsupported(format!(
                    "the NCCL backend needs a CUDA device, got {d:?}"
                )))
            }
            (Backend::Gloo, _) => -1,
        };
        let connect_err = |message: String| DistError::Connect {
            rank: env.rank,
            world_size: env.world_size,
            addr: env.master_addr.clone(),
            port: env.master_port,
            backend,
            message,
        };
        let ms = timeout.as_millis().clamp(1, i64::MAX as u128) as i64;
        let addr = CString::new(env.master_addr.as_str())
            .map_err(|_| connect_err("MASTER_ADDR contains a NUL byte".into()))?;
        let (rank, world) = (
            c_int::try_from(env.rank).map_err(|_| connect_err("rank too large".into()))?,
            c_int::try_from(env.world_size).map_err(|_| connect_err("world size too large".into()))?,
        );
        let code = match backend {
            Backend::Gloo => 0,
            Backend::Nccl => 1,
        };
        // SAFETY: `addr` is a valid C string for the duration of the call; the shim
        // catches every C++ exception and reports failure as NULL.
        let raw = unsafe {
            ffi::tiw_c10d_connect(
                code,
                addr.as_ptr(),
                env.master_port,
                rank,
                world,
                c_int::from(!env.agent_store),
                device_index,
                ms,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| connect_err(ffi::last_error()))?;
        Ok(ProcessGroup {
            raw,
            rank: env.rank,
            world_size: env.world_size,
            backend,
            scratch: if backend == Backend::Nccl {
                device
            } else {
                Device::Cpu
            },
            timeout,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes in the group.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The backend the group runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn fail(&self, op: &'static str, message: String) -> DistError {
        DistError::Collective {
            rank: self.rank,
            world_size: self.world_size,
            backend: self.backend,
            op,
            message,
        }
    }

    /// One collective per buffer (all in flight, then all awaited); buffers are contiguous.
    fn raw_collective(&self, op: Op, name: &'static str, bufs: &[Tensor]) -> Result<(), DistError> {
        if bufs.is_empty() {
            return Ok(());
        }
        // The shim only reads the handles (it makes its own references to the storages).
        let ptrs: Vec<*mut C_tensor> = bufs.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
        let t0 = Instant::now();
        // SAFETY: `ptrs` holds live tensor handles for the duration of the call; the
        // shim catches every C++ exception and reports failure as -1.
        let rc = unsafe {
            match op {
                Op::Sum => ffi::tiw_c10d_all_reduce_sum(self.raw.as_ptr(), ptrs.as_ptr(), ptrs.len()),
                Op::Broadcast(root) => {
                    ffi::tiw_c10d_broadcast(self.raw.as_ptr(), ptrs.as_ptr(), ptrs.len(), root as c_int)
                }
            }
        };
        self.check(rc, name, t0)
    }

    /// Turns a shim status into a result; a failure that took the whole timeout says so
    /// (gloo's own message may only speak of a closed connection).
    fn check(&self, rc: c_int, name: &'static str, t0: Instant) -> Result<(), DistError> {
        if rc == 0 {
            return Ok(());
        }
        let mut msg = ffi::last_error();
        let took = t0.elapsed();
        if took >= self.timeout.mul_f64(0.9) {
            msg = format!(
                "no answer within the {:.1} s timeout ({msg})",
                self.timeout.as_secs_f64()
            );
        }
        Err(self.fail(name, msg))
    }

    /// Packs `tensors` into per-kind buckets of at most [`BUCKET_BYTES`] (a larger tensor
    /// gets a bucket of its own, used in place when contiguous), runs `op` once per bucket,
    /// applies `post` (e.g. the mean's division) to each bucket and writes results back.
    fn bucketed(
        &self,
        tensors: &[&Tensor],
        op: Op,
        name: &'static str,
        post: impl Fn(&mut Tensor) -> Result<(), tch::TchError>,
    ) -> Result<(), DistError> {
        let device = match tensors.first() {
            Some(t) => t.device(),
            None => return Ok(()),
        };
        let mut buckets: Vec<(Kind, Vec<usize>, usize)> = Vec::new();
        let mut open: Vec<(Kind, usize)> = Vec::new(); // kind -> index of its open bucket
        for (i, t) in tensors.iter().enumerate() {
            if !t.defined() {
                return Err(self.fail(name, format!("tensor {i} is undefined")));
            }
            if t.device() != device {
                return Err(self.fail(
                    name,
                    format!(
                        "tensor {i} is on {:?}, tensor 0 on {device:?}: one device per call",
                        t.device()
                    ),
                ));
            }
            let n = t.numel();
            if n == 0 {
                continue;
            }
            let kind = t.f_kind()?;
            let bytes = n * kind.elt_size_in_bytes();
            let slot = open.iter().position(|&(k, _)| k == kind);
            match slot.map(|s| open[s].1) {
                Some(b) if buckets[b].2 + bytes <= BUCKET_BYTES => {
                    buckets[b].1.push(i);
                    buckets[b].2 += bytes;
                }
                _ => {
                    buckets.push((kind, vec![i], bytes));
                    let b = buckets.len() - 1;
                    match slot {
                        Some(s) => open[s].1 = b,
                        None => open.push((kind, b)),
                    }
                }
            }
        }
        tch::no_grad(|| {
            // A bucket of one contiguous tensor is that tensor (no copy); others are packed.
            let flats = buckets
                .iter()
                .map(|(_, idx, _)| {
                    let t = tensors[idx[0]];
                    if idx.len() == 1 && t.is_contiguous() {
                        Ok(t.shallow_clone())
                    } else {
                        let parts: Vec<Tensor> = idx
                            .iter()
                            .map(|&i| tensors[i].f_reshape([-1]))
                            .collect::<Result<_, _>>()?;
                        Tensor::f_cat(&parts, 0)
                    }
                })
                .collect::<Result<Vec<Tensor>, tch::TchError>>()?;
            self.raw_collective(op, name, &flats)?;
            for ((_, idx, _), mut flat) in buckets.iter().zip(flats) {
                post(&mut flat)?;
                if idx.len() == 1 && flat.data_ptr() == tensors[idx[0]].data_ptr() {
                    continue;
                }
                let mut off = 0i64;
                for &i in idx {
                    let t = tensors[i];
                    let n = t.numel() as i64;
                    t.shallow_clone()
                        .f_copy_(&flat.f_narrow(0, off, n)?.f_view(t.size().as_slice())?)?;
                    off += n;
                }
            }
            Ok(())
        })
    }

    /// In-place sum over ranks. The tensors (any kinds, one device) are packed into
    /// [`BUCKET_BYTES`] buckets per kind, like DDP: one collective per bucket, all in flight.
    /// Tensors may require grad (the update bypasses autograd) and need not be contiguous.
    pub fn all_reduce_sum(&self, tensors: &[&Tensor]) -> Result<(), DistError> {
        self.bucketed(tensors, Op::Sum, "all_reduce", |_| Ok(()))
    }

    /// In-place mean over ranks: the sum, then a division by the world size (Gloo has no
    /// average). Floating-point tensors only.
    pub fn all_reduce_mean(&self, tensors: &[&Tensor]) -> Result<(), DistError> {
        for (i, t) in tensors.iter().enumerate() {
            if t.defined() && !t.is_floating_point() {
                return Err(self.fail(
                    "all_reduce",
                    format!("mean of tensor {i} of kind {:?}: floating point only", t.kind()),
                ));
            }
        }
        let w = self.world_size as f64;
        self.bucketed(tensors, Op::Sum, "all_reduce", |flat| {
            flat.f_div_scalar_(w).map(|_| ())
        })
    }

    /// Overwrites `tensors` on every rank with rank `root`'s values (bucketed as
    /// [`ProcessGroup::all_reduce_sum`]).
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<(), DistError> {
        if root >= self.world_size {
            return Err(self.fail(
                "broadcast",
                format!("root {root} is not a rank of a world of {}", self.world_size),
            ));
        }
        self.bucketed(tensors, Op::Broadcast(root), "broadcast", |_| Ok(()))
    }

    /// Every rank's `values`, ordered by rank (small payloads: flags, counters, hashes).
    /// Ranks may pass different lengths. Values travel exactly, except that -0.0 arrives
    /// as +0.0.
    pub fn all_gather_f64(&self, values: &[f64]) -> Result<Vec<Vec<f64>>, DistError> {
        let opts = (Kind::Double, self.scratch);
        let w = self.world_size as i64;
        // Lengths first, then a zero-padded [world, max_len] table where each rank fills
        // its row: a sum of one value and zeros is exact.
        let lens = Tensor::f_zeros([w], opts)?;
        let _ = lens.f_get(self.rank as i64)?.f_fill_(values.len() as f64)?;
        self.raw_collective(Op::Sum, "all_gather", std::slice::from_ref(&lens))?;
        let lens: Vec<f64> = Vec::try_from(lens.f_to(Device::Cpu)?)?;
        let max = lens.iter().fold(0.0f64, |a, &b| a.max(b)) as i64;
        let table = Tensor::f_zeros([w, max.max(1)], opts)?;
        if !values.is_empty() {
            let row = Tensor::f_from_slice(values)?.f_to(self.scratch)?;
            table
                .f_get(self.rank as i64)?
                .f_narrow(0, 0, values.len() as i64)?
                .f_copy_(&row)?;
        }
        self.raw_collective(Op::Sum, "all_gather", std::slice::from_ref(&table))?;
        let flat: Vec<f64> = Vec::try_from(table.f_to(Device::Cpu)?.f_reshape([-1])?)?;
        Ok(lens
            .iter()
            .enumerate()
            .map(|(r, &n)| {
                let start = r * max.max(1) as usize;
                flat[start..start + n as usize].to_vec()
            })
            .collect())
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), DistError> {
        let t0 = Instant::now();
        // SAFETY: `raw` is a live group; failures come back as -1.
        let rc = unsafe { ffi::tiw_c10d_barrier(self.raw.as_ptr()) };
        self.check(rc, "barrier", t0)
    }

    /// Shuts the backend down, reporting its error (dropping does the same silently).
    pub fn shutdown(self) -> Result<(), DistError> {
        // SAFETY: `raw` is a live group; it is freed by Drop right after.
        let rc = unsafe { ffi::tiw_c10d_shutdown(self.raw.as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(self.fail("shutdown", ffi::last_error()))
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from tiw_c10d_connect and is freed exactly once, here.
        unsafe { ffi::tiw_c10d_free(self.raw.as_ptr()) }
    }
}

/// Gives every tensor of `params` a zeroed gradient that is a view into one flat buffer
/// (per dtype and device the parameters share: all of them must agree), and returns the
/// buffer. Autograd then accumulates into the buffer, so one in-place all-reduce of it sums
/// every gradient without packing copies (DDP's `gradient_as_bucket_view`). Gradients must
/// afterwards be zeroed in place, never reset to undefined.
pub fn flat_gradients(params: &[Tensor]) -> Result<Tensor, DistError> {
    let Some(first) = params.first() else {
        return Ok(Tensor::zeros([0], (Kind::Float, Device::Cpu)));
    };
    let (kind, device) = (first.kind(), first.device());
    if params.iter().any(|p| p.kind() != kind || p.device() != device) {
        return Err(DistError::Unsupported(
            "flat gradients need parameters of one dtype on one device".into(),
        ));
    }
    let total: i64 = params.iter().map(|p| p.numel() as i64).sum();
    let flat = Tensor::zeros([total], (kind, device));
    let mut offset = 0;
    for p in params {
        let n = p.numel() as i64;
        let view = flat.narrow(0, offset, n).view(p.size().as_slice());
        offset += n;
        // SAFETY: both pointers are live tch tensors for the duration of the call; the shim
        // copies the handle (a refcounted at::Tensor) into the parameter's grad slot.
        let rc = unsafe { ffi::tiw_set_grad(p.as_ptr() as *mut _, view.as_ptr() as *mut _) };
        if rc != 0 {
            return Err(DistError::Unsupported(format!(
                "cannot set a flat gradient view: {}",
                ffi::last_error()
            )));
        }
    }
    Ok(flat)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tidy_drops_only_source_locations() {
        let t = super::ffi::tidy;
        assert_eq!(
            t("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1"),
            "Connection closed by peer [127.0.0.1]:1"
        );
        assert_eq!(t("[rank 1] something"), "[rank 1] something");
        assert_eq!(t("  Timed out after 4 seconds\n"), "Timed out after 4 seconds");
    }
}
