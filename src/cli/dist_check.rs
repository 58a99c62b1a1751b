//! `tiw dist-check` (hidden): joins the run described by the launcher's environment
//! (`tiw launch`, torchrun, srun), checks every collective of `tiw::dist` with exact
//! values, and optionally times a large all-reduce. Test hooks stop or hang one rank at a
//! chosen stage, so that the failure behaviour of the others can be tested.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Kind, Tensor};
use tiw::device::DeviceSpec;
use tiw::dist::{local_device, BackendChoice, LaunchEnv, ProcessGroup};

/// Stages of the check, in order (for `--fail-at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Before joining the group.
    Connect,
    /// Before the all-reduce checks.
    AllReduce,
    /// Before the broadcast checks.
    Broadcast,
    /// Before all_gather_f64.
    AllGather,
    /// Before the final barrier.
    Barrier,
}

/// Arguments of `tiw dist-check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Communication backend (auto: NCCL on CUDA when built in, else Gloo).
    #[arg(long, value_enum, default_value = "auto")]
    dist_backend: BackendChoice,
    /// Seconds the rendezvous and each collective may take before failing.
    #[arg(long, default_value_t = 1800.0)]
    dist_timeout: f64,
    /// Device of the tensors: cpu, cuda (= cuda:LOCAL_RANK) or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Test hook: rank `--fail-rank` exits (status 3, no clean-up) when reaching STAGE.
    #[arg(long, value_enum)]
    fail_at: Option<Stage>,
    /// The rank that `--fail-at` stops.
    #[arg(long, default_value_t = 1)]
    fail_rank: usize,
    /// With --fail-at: sleep (up to an hour) at the stage instead of exiting.
    #[arg(long, requires = "fail_at")]
    hang: bool,
    /// After the checks, time all-reduces of this many f32 values (0: no benchmark).
    #[arg(long, default_value_t = 0)]
    bench_numel: i64,
    /// Timed iterations of the benchmark.
    #[arg(long, default_value_t = 5)]
    bench_iters: usize,
}

/// Runs `tiw dist-check`.
pub fn run(a: Args) -> Result<()> {
    ensure!(
        a.dist_timeout.is_finite() && a.dist_timeout > 0.0,
        "--dist-timeout must be a positive number of seconds"
    );
    let timeout = Duration::from_secs_f64(a.dist_timeout);
    let Some(env) = LaunchEnv::from_env()? else {
        bail!("dist-check: no launcher found (start it with `tiw launch`, torchrun or srun)");
    };
    let hook = |stage: Stage| {
        if a.fail_at == Some(stage) && env.rank == a.fail_rank {
            eprintln!("dist-check: rank {} stops at {stage:?} (test hook)", env.rank);
            if a.hang {
                std::thread::sleep(Duration::from_secs(3600));
            }
            let _ = std::io::stdout().flush();
            // A crash, as far as the peers can tell: no clean-up, sockets closed by the kernel.
            // SAFETY: _exit ends the process at once; nothing is used afterwards.
            unsafe { libc::_exit(3) };
        }
    };
    let requested = match a.device {
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(n) => Device::Cuda(n),
    };
    let device = match local_device(requested, Some(&env)) {
        Device::Cuda(n) => tiw::device::select(DeviceSpec::Cuda(n))?,
        d => d,
    };
    let backend = a.dist_backend.resolve(device)?;
    hook(Stage::Connect);
    let t0 = Instant::now();
    let pg = ProcessGroup::connect(&env, backend, device, timeout)?;
    eprintln!(
        "dist-check: rank {}/{} joined ({backend}, {device:?}) in {:.2} s",
        pg.rank(),
        pg.world_size(),
        t0.elapsed().as_secs_f64()
    );
    hook(Stage::AllReduce);
    check_all_reduce(&pg, device).context("all-reduce check")?;
    hook(Stage::Broadcast);
    check_broadcast(&pg, device).context("broadcast check")?;
    hook(Stage::AllGather);
    check_all_gather(&pg).context("all_gather_f64 check")?;
    hook(Stage::Barrier);
    pg.barrier()?;
    if a.bench_numel > 0 {
        bench(&pg, device, a.bench_numel, a.bench_iters.max(1))?;
    }
    println!(
        "dist-check ok rank {}/{} backend {}",
        pg.rank(),
        pg.world_size(),
        pg.backend()
    );
    pg.shutdown()?;
    Ok(())
}

/// Whether `t` equals `want` exactly (same shape, every element).
fn exact(name: &str, t: &Tensor, want: &Tensor) -> Result<()> {
    let t = t.to(Device::Cpu);
    let want = want.to(Device::Cpu).to_kind(t.kind());
    ensure!(
        t.size() == want.size(),
        "{name}: shape {:?}, expected {:?}",
        t.size(),
        want.size()
    );
    let bad = t.ne_tensor(&want).sum(Kind::Int64).int64_value(&[]);
    if bad > 0 {
        let diff = (&t - &want).abs().to_kind(Kind::Double);
        let worst = diff.argmax(None, false).int64_value(&[]);
        bail!(
            "{name}: {bad} element(s) differ; e.g. flat index {worst}: {} instead of {}",
            t.reshape([-1]).double_value(&[worst]),
            want.reshape([-1]).double_value(&[worst])
        );
    }
    Ok(())
}

fn check_all_reduce(pg: &ProcessGroup, dev: Device) -> Result<()> {
    let (r, w) = (pg.rank() as f64, pg.world_size() as f64);
    let sum_r = w * (w - 1.0) / 2.0; // Σ rank
                                     // Mixed kinds, shapes and layouts in one call: f32, f64, a transposed (non-contiguous)
                                     // f32 view, i64, and a parameter that requires grad.
    let a = Tensor::arange(5, (Kind::Float, dev)) * (r + 1.0);
    let b = Tensor::full([2, 3], 10.0 * r + 0.125, (Kind::Double, dev));
    let c = Tensor::arange(12, (Kind::Float, dev)).reshape([3, 4]).tr() * (r + 1.0);
    let d = Tensor::full([4], pg.rank() as i64 + 1, (Kind::Int64, dev));
    let p = Tensor::full([3], r, (Kind::Float, dev)).set_requires_grad(true);
    pg.all_reduce_sum(&[&a, &b, &c, &d, &p])?;
    let s1 = sum_r + w; // Σ (rank + 1)
    exact("f32 sum", &a, &(Tensor::arange(5, (Kind::Float, dev)) * s1))?;
    exact(
        "f64 sum",
        &b,
        &Tensor::full([2, 3], 10.0 * sum_r + 0.125 * w, (Kind::Double, dev)),
    )?;
    exact(
        "non-contiguous sum",
        &c,
        &(Tensor::arange(12, (Kind::Float, dev)).reshape([3, 4]).tr() * s1),
    )?;
    exact("i64 sum", &d, &Tensor::full([4], s1 as i64, (Kind::Int64, dev)))?;
    exact(
        "requires-grad sum",
        &p.detach(),
        &Tensor::full([3], sum_r, (Kind::Float, dev)),
    )?;
    ensure!(p.requires_grad(), "the parameter lost requires_grad");

    // Mean, f32 and f64: Σ (rank + 1) / world = (world + 1) / 2.
    let m32 = Tensor::full([7], r + 1.0, (Kind::Float, dev));
    let m64 = Tensor::full([3], (r + 1.0) / 3.0, (Kind::Double, dev));
    pg.all_reduce_mean(&[&m32, &m64])?;
    exact("f32 mean", &m32, &Tensor::full([7], s1 / w, (Kind::Float, dev)))?;
    let want64 = (0..pg.world_size()).map(|k| (k as f64 + 1.0) / 3.0).sum::<f64>() / w;
    let got64 = m64.double_value(&[0]);
    ensure!(
        (got64 - want64).abs() <= 4.0 * f64::EPSILON * want64,
        "f64 mean {got64}, expected {want64}"
    );

    // Several 25 MiB buckets: a 28 MB tensor (a bucket of its own, reduced in place), two
    // 16 MB ones (packed: one bucket each) and a small one; integer values, exact sums.
    let pattern = |n: i64| Tensor::arange(n, (Kind::Float, dev)).fmod(1000.0);
    let sizes = [7_000_000i64, 4_000_000, 4_000_000, 1000];
    let ts: Vec<Tensor> = sizes.iter().map(|&n| pattern(n) + r).collect();
    let refs: Vec<&Tensor> = ts.iter().collect();
    pg.all_reduce_sum(&refs)?;
    for (t, &n) in ts.iter().zip(&sizes) {
        exact(
            &format!("multi-bucket sum ({n} values)"),
            t,
            &(pattern(n) * w + sum_r),
        )?;
    }
    Ok(())
}

fn check_broadcast(pg: &ProcessGroup, dev: Device) -> Result<()> {
    let r = pg.rank() as f64;
    let last = pg.world_size() - 1;
    let p = Tensor::full([3], 100.0 + r, (Kind::Float, dev));
    let q = (Tensor::arange(6, (Kind::Double, dev)).reshape([2, 3]) + r).tr();
    pg.broadcast(&[&p, &q], 0)?;
    exact(
        "broadcast f32 from 0",
        &p,
        &Tensor::full([3], 100.0, (Kind::Float, dev)),
    )?;
    exact(
        "broadcast f64 from 0",
        &q,
        &Tensor::arange(6, (Kind::Double, dev)).reshape([2, 3]).tr(),
    )?;
    let z = Tensor::full([5], r, (Kind::Float, dev));
    pg.broadcast(&[&z], last)?;
    exact(
        "broadcast from the last rank",
        &z,
        &Tensor::full([5], last as f64, (Kind::Float, dev)),
    )?;
    Ok(())
}

fn check_all_gather(pg: &ProcessGroup) -> Result<()> {
    // Rank k sends k + 1 values, among them ones that a sloppy transport would round.
    let mine = |k: usize| -> Vec<f64> {
        (0..=k)
            .map(|i| match i % 3 {
                0 => k as f64 + 0.1,
                1 => 1e300 * (k as f64 + 1.0),
                _ => -(k as f64) / 7.0,
            })
            .collect()
    };
    let got = pg.all_gather_f64(&mine(pg.rank()))?;
    ensure!(
        got.len() == pg.world_size(),
        "{} rows, expected {}",
        got.len(),
        pg.world_size()
    );
    for (k, row) in got.iter().enumerate() {
        let want = mine(k);
        ensure!(
            row.iter()
                .map(|v| v.to_bits())
                .eq(want.iter().map(|v| v.to_bits())),
            "rank {k}'s values {row:?}, expected {want:?}"
        );
    }
    Ok(())
}

fn bench(pg: &ProcessGroup, dev: Device, numel: i64, iters: usize) -> Result<()> {
    let one = Tensor::ones([numel], (Kind::Float, dev));
    // The same values as ~200 parameter-sized tensors: the bucketed (packing) path.
    let chunk = (numel + 199) / 200;
    let parts: Vec<Tensor> = Tensor::ones([numel], (Kind::Float, dev))
        .split(chunk, 0)
        .iter()
        .map(|t| t.copy())
        .collect();
    let part_refs: Vec<&Tensor> = parts.iter().collect();
    let time = |f: &dyn Fn() -> Result<(), tiw::dist::DistError>| -> Result<(f64, f64)> {
        f()?; // warm-up
        let mut ms = Vec::with_capacity(iters);
        for _ in 0..iters {
            pg.barrier()?;
            let t = Instant::now();
            f()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        Ok((ms[ms.len() / 2], ms[0]))
    };
    let (med1, min1) = time(&|| pg.all_reduce_sum(&[&one]))?;
    let (med2, min2) = time(&|| pg.all_reduce_sum(&part_refs))?;
    if pg.rank() == 0 {
        println!(
            "bench all_reduce of {numel} f32 ({:.1} MB) on {} ranks ({}): one tensor median {med1:.1} ms (min {min1:.1}); {} tensors in 25 MiB buckets median {med2:.1} ms (min {min2:.1}); {iters} iterations",
            numel as f64 * 4.0 / 1e6,
            pg.world_size(),
            pg.backend(),
            parts.len(),
        );
    }
    Ok(())
}
