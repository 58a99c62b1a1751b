//! `tiw generate`: EDM sampling to PNG files laid out like generate.py, on ort, tract or tch,
//! shardable across machines.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tiw::device::DeviceSpec;
use tiw::npz::{self, Array, Data};
use tiw::precision::TchPrecision;
use tiw::runtime::{Backend, NetInfo, Runtime};
use tiw::sample::denoiser::{Denoiser, NetDenoiser};
use tiw::sample::dg::{dg_sample, DgGuide, DgSettings};
use tiw::sample::noise::{self, BatchNoise};
use tiw::sample::sampler::{
    ablation_sample, edm_sample, to_images, Ablation, Disc, SamplerSettings, Scaling, Schedule, Solver,
};
use tiw::sample::seeds::{parse_seeds, parse_shard, shard_batches};

/// Arguments of `tiw generate` (flags and defaults as EDM's generate.py).
#[derive(Debug, clap::Args)]
#[command(rename_all = "verbatim")]
pub struct Args {
    /// Network: .pkl, .pt (training state), .safetensors (from `tiw convert`) or .onnx.
    #[arg(long)]
    network: PathBuf,
    /// Output folder for the PNGs.
    #[arg(long)]
    outdir: PathBuf,
    /// Seeds, e.g. 0-49999 or 1,5,7-9.
    #[arg(long, default_value = "0-63")]
    seeds: String,
    /// Put images in 000000/, 001000/, … folders of 1000 seeds.
    #[arg(long)]
    subdirs: bool,
    /// Class label for conditional networks (default: random per seed).
    #[arg(long)]
    class: Option<usize>,
    /// Maximum batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Number of noise levels.
    #[arg(long, default_value_t = 18)]
    steps: usize,
    /// Lowest noise level (default: 0.002, or the ablation discretisation's).
    #[arg(long)]
    sigma_min: Option<f64>,
    /// Highest noise level (default: 80, or the ablation discretisation's).
    #[arg(long)]
    sigma_max: Option<f64>,
    /// Time-step exponent.
    #[arg(long, default_value_t = 7.0)]
    rho: f64,
    /// Stochasticity strength.
    #[arg(long = "S_churn", default_value_t = 0.0)]
    s_churn: f64,
    /// Stochasticity: minimum σ.
    #[arg(long = "S_min", default_value_t = 0.0)]
    s_min: f64,
    /// Stochasticity: maximum σ.
    #[arg(long = "S_max", default_value_t = f64::INFINITY)]
    s_max: f64,
    /// Stochasticity: noise inflation.
    #[arg(long = "S_noise", default_value_t = 1.0)]
    s_noise: f64,
    /// Ablation: ODE solver.
    #[arg(long, value_enum)]
    solver: Option<Solver>,
    /// Ablation: time-step discretisation.
    #[arg(long, value_enum)]
    disc: Option<Disc>,
    /// Ablation: noise schedule.
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    /// Ablation: signal scaling.
    #[arg(long, value_enum)]
    scaling: Option<Scaling>,
    /// Runtime.
    #[arg(long, value_enum, default_value_t = Runtime::Ort)]
    runtime: Runtime,
    /// cpu, cuda or cuda:N (also the device of the random generators).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Generate only shard I of N (the official per-rank split), e.g. 0/4.
    #[arg(long)]
    shard: Option<String>,
    /// Skip batches whose PNGs all exist already.
    #[arg(long)]
    resume: bool,
    /// Also write `x` (final f64 state, N×C×H×W) and `images` (u8 N×H×W×C) in seed order.
    #[arg(long = "out-npz")]
    out_npz: Option<PathBuf>,
    /// Parity mode: latents from this .npz (key `latents`, N×C×H×W, seed order; an optional
    /// key `class_labels` (N×L one-hot) replaces the drawn labels too).
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Parity mode: per-step noise from this .npz (key `randn`, steps×N×C×H×W).
    #[arg(long)]
    noise: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// tch on CUDA: plain f32 convolutions (default: cuDNN TF32 convolutions allowed, as under
    /// PyTorch's defaults that EDM's generate.py runs with; ~1e-3 relative per network call).
    #[arg(long)]
    strict_f32: bool,
    /// tch on CUDA: run a `use_fp16=True` network in f32 (default: f16, as EDMPrecond does).
    #[arg(long)]
    force_fp32: bool,
    /// Accepted for compatibility: TF32 convolutions are now the default (see --strict-f32).
    #[arg(long = "allow-tf32", hide = true)]
    allow_tf32: bool,
    /// Memory limit in GB for the check before the first batch (default: the CPU's available
    /// memory, or the CUDA device's free memory).
    #[arg(long = "max-memory")]
    max_memory: Option<f64>,
    #[command(flatten)]
    dg: DgArgs,
}

/// Discriminator guidance (DG / EDM-G++; defaults as DG's generate.py). Guidance is on when
/// `--discriminator` is given.
#[derive(Debug, clap::Args)]
#[command(rename_all = "kebab-case")]
pub struct DgArgs {
    /// DG: weight of the 1st-order guidance term (added to the Euler derivative).
    #[arg(long)]
    dg_weight_1st_order: Option<f64>,
    /// DG: weight of the 2nd-order term (added to the Heun correction derivative, at t_next per
    /// sample; DG's published code crashes on this path).
    #[arg(long)]
    dg_weight_2nd_order: Option<f64>,
    /// DG: smallest VP time τ (batch minimum) at which guidance applies.
    #[arg(long)]
    dg_time_min: Option<f64>,
    /// DG: largest VP time τ (batch minimum) at which guidance applies.
    #[arg(long)]
    dg_time_max: Option<f64>,
    /// DG: boosting (churn for samples with log ratio < 0 every 5th step; doubled guidance for
    /// them at even steps).
    #[arg(long)]
    dg_boosting: bool,
    /// DG: ADM feature extractor checkpoint (.pt / .safetensors).
    #[arg(long)]
    extractor: Option<PathBuf>,
    /// DG: time-dependent discriminator checkpoint (.pt / .safetensors); turns guidance on.
    #[arg(long)]
    discriminator: Option<PathBuf>,
    /// DG: class-conditional discriminator, fed the network's one-hot labels.
    #[arg(long)]
    cond: bool,
}

/// The DG settings of the flags, or None without `--discriminator`.
fn dg_settings(d: &DgArgs) -> Result<Option<DgSettings>> {
    let any_flag = d.dg_weight_1st_order.is_some()
        || d.dg_weight_2nd_order.is_some()
        || d.dg_time_min.is_some()
        || d.dg_time_max.is_some()
        || d.dg_boosting
        || d.cond
        || d.extractor.is_some();
    if d.discriminator.is_none() {
        if any_flag {
            bail!("the --dg-* / --extractor / --cond flags need --discriminator (and --extractor)");
        }
        return Ok(None);
    }
    if d.extractor.is_none() {
        bail!("--discriminator needs --extractor (the ADM feature extractor it was trained on)");
    }
    let def = DgSettings::default();
    let s = DgSettings {
        w1: d.dg_weight_1st_order.unwrap_or(def.w1),
        w2: d.dg_weight_2nd_order.unwrap_or(def.w2),
        time_min: d.dg_time_min.unwrap_or(def.time_min),
        time_max: d.dg_time_max.unwrap_or(def.time_max),
        boosting: d.dg_boosting,
    };
    s.validate()?;
    Ok(Some(s))
}

fn png_path(outdir: &Path, seed: u64, subdirs: bool) -> PathBuf {
    if subdirs {
        outdir
            .join(format!("{:06}", seed - seed % 1000))
            .join(format!("{seed:06}.png"))
    } else {
        outdir.join(format!("{seed:06}.png"))
    }
}

/// The libtorch precision of the flags; the parity mode (pinned latents or noise) always
/// runs strict f32 (PyTorch's defaults otherwise).
fn precision(a: &Args) -> TchPrecision {
    let _ = a.allow_tf32;
    if a.latents.is_some() || a.noise.is_some() {
        TchPrecision::STRICT
    } else {
        TchPrecision {
            force_fp32: a.force_fp32,
            strict_f32: a.strict_f32,
        }
    }
}

/// This process's share: (rank, world size, device, quiet). Under a launcher (torchrun,
/// srun, `tiw launch`) each rank takes its share of the seeds exactly as --shard
/// RANK/WORLD_SIZE would, on its local GPU.
fn share(a: &Args) -> Result<(usize, usize, DeviceSpec, bool)> {
    let launch = tiw::dist::LaunchEnv::from_env()?;
    let (rank, world) = match (&a.shard, &launch) {
        (Some(_), Some(e)) if e.world_size > 1 => bail!(
            "--shard and the launcher's RANK/WORLD_SIZE ({}/{}) both split the seeds; use one",
            e.rank,
            e.world_size
        ),
        (Some(s), _) => parse_shard(s)?,
        (None, Some(e)) => (e.rank, e.world_size),
        (None, None) => (0, 1),
    };
    if launch.as_ref().is_some_and(|e| e.world_size > 1) && a.out_npz.is_some() {
        bail!("--out-npz under a launcher: every rank would write the same file; run the parity mode in one process (or use --shard with one output per shard)");
    }
    let device = match (a.device, &launch) {
        (DeviceSpec::Cuda(0), Some(e)) => DeviceSpec::Cuda(e.local_rank),
        (d, _) => d,
    };
    let quiet = a.quiet || (launch.is_some() && rank != 0);
    Ok((rank, world, device, quiet))
}

/// The sampler settings of the flags.
fn sampler_settings(a: &Args) -> SamplerSettings {
    let ablation = (a.solver.is_some() || a.disc.is_some() || a.schedule.is_some() || a.scaling.is_some())
        .then(|| Ablation {
            solver: a.solver.unwrap_or(Solver::Heun),
            disc: a.disc.unwrap_or(Disc::Edm),
            schedule: a.schedule.unwrap_or(Schedule::Linear),
            scaling: a.scaling.unwrap_or(Scaling::None),
        });
    SamplerSettings {
        num_steps: a.steps,
        sigma_min: a.sigma_min,
        sigma_max: a.sigma_max,
        rho: a.rho,
        s_churn: a.s_churn,
        s_min: a.s_min,
        s_max: a.s_max,
        s_noise: a.s_noise,
        ablation,
    }
}

/// The guidance networks, checked against the sampled network (None without DG).
fn load_guide(a: &Args, dg: &Option<DgSettings>, info: &NetInfo) -> Result<Option<DgGuide>> {
    match (dg, &a.dg.extractor, &a.dg.discriminator) {
        (Some(_), Some(fe), Some(dis)) => {
            let g = DgGuide::load(fe, dis, a.device, info.resolution)?;
            g.check_fits(info.channels, info.resolution, info.label_dim, a.dg.cond)?;
            Ok(Some(g))
        }
        _ => Ok(None),
    }
}

/// Parity-mode inputs, in seed order (position in --seeds).
#[derive(Default)]
struct Given {
    latents: Option<Vec<f32>>,
    labels: Option<Vec<f32>>,
    noise: Option<Vec<f64>>,
}

impl Given {
    fn load(a: &Args, seeds: usize, info: &NetInfo) -> Result<Self> {
        let (c, r) = (info.channels, info.resolution);
        let mut g = Given::default();
        if let Some(p) = &a.latents {
            let arrays = npz::read(p)?;
            let l = npz::get(&arrays, "latents", p)?;
            if l.shape != [seeds, c, r, r] {
                bail!(
                    "{}: latents has shape {:?}; expected ({seeds}, {c}, {r}, {r}) for {seeds} seeds",
                    p.display(),
                    l.shape,
                );
            }
            if let Some(cl) = arrays.iter().find(|x| x.name == "class_labels") {
                if cl.shape != [seeds, info.label_dim] {
                    bail!(
                        "{}: class_labels has shape {:?}; expected ({seeds}, {})",
                        p.display(),
                        cl.shape,
                        info.label_dim
                    );
                }
                g.labels = Some(cl.to_f32());
            }
            g.latents = Some(l.to_f32());
        }
        if let Some(p) = &a.noise {
            let arrays = npz::read(p)?;
            let nz = npz::get(&arrays, "randn", p)?;
            if nz.shape != [a.steps, seeds, c, r, r] {
                bail!(
                    "{}: randn has shape {:?}; expected ({}, {seeds}, {c}, {r}, {r})",
                    p.display(),
                    nz.shape,
                    a.steps,
                );
            }
            g.noise = Some(nz.to_f64());
        }
        Ok(g)
    }
}

/// Everything the batches share.
struct Job<'a> {
    a: &'a Args,
    info: NetInfo,
    settings: SamplerSettings,
    dg: Option<DgSettings>,
    guide: Option<DgGuide>,
    given: Given,
    /// Position of each seed in --seeds.
    index_of: std::collections::HashMap<u64, usize>,
    seeds: usize,
    gen_device: tch::Device,
}

impl Job<'_> {
    /// Rows of `src` (per-seed blocks of `per` values, seed order) for `batch`.
    fn pick<T: Copy>(&self, src: &[T], base: usize, per: usize, batch: &[u64]) -> Vec<T> {
        batch
            .iter()
            .flat_map(|s| {
                let i = base + self.index_of[s] * per;
                src[i..i + per].iter().copied()
            })
            .collect()
    }

    /// Latents, labels and per-step noise of a batch: drawn per seed, or the given ones.
    fn draw(&self, batch: &[u64]) -> Result<BatchNoise> {
        let (c, r, ld) = (self.info.channels, self.info.resolution, self.info.label_dim);
        // DG's boosting adds churn to some samples: draw the per-step noise then too.
        let churn_used = self.settings.s_churn > 0.0 || self.dg.is_some_and(|d| d.boosting);
        let need_steps = if churn_used && self.given.noise.is_none() {
            self.a.steps
        } else {
            0
        };
        let mut drawn = noise::draw(batch, c, r, ld, need_steps, self.a.class, self.gen_device)?;
        if let Some(l) = &self.given.latents {
            drawn.latents = self.pick(l, 0, c * r * r, batch);
        }
        if let Some(cl) = &self.given.labels {
            drawn.labels = Some(self.pick(cl, 0, ld, batch));
        }
        Ok(drawn)
    }

    /// Samples one batch: the final state `x` (f64, N×C×H×W).
    fn sample(&self, den: &mut dyn Denoiser, batch: &[u64]) -> Result<Vec<f64>> {
        let n = batch.len();
        let per = self.info.channels * self.info.resolution * self.info.resolution;
        let drawn = self.draw(batch)?;
        let zeros = vec![0f64; n * per];
        let mut step_noise = |i: usize| -> Result<Vec<f64>> {
            if let Some(nz) = &self.given.noise {
                return Ok(self.pick(nz, i * self.seeds * per, per, batch));
            }
            Ok(if drawn.steps.is_empty() {
                zeros.clone()
            } else {
                drawn.steps[i].clone()
            })
        };
        let (x, labels, s) = (&drawn.latents, drawn.labels.as_deref(), &self.settings);
        Ok(if let Some(dgs) = &self.dg {
            let cond = self.a.dg.cond;
            dg_sample(
                den,
                self.guide.as_ref(),
                x,
                n,
                labels,
                cond,
                s,
                dgs,
                &mut step_noise,
                None,
            )?
        } else if s.ablation.is_some() {
            ablation_sample(den, x, n, labels, s, &mut step_noise)?.0
        } else {
            edm_sample(den, x, n, labels, s, &mut step_noise)?.0
        })
    }
}

fn progress_bar(quiet: bool, total: usize, what: String) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} images, {per_sec}, eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_message(format!("generating with {what}"));
    bar
}

/// `--out-npz`: seeds, final states and images in seed order.
fn write_npz(p: &Path, mut keep: Vec<(u64, Vec<f64>, Vec<u8>)>, job: &Job) -> Result<()> {
    let (c, r) = (job.info.channels, job.info.resolution);
    keep.sort_by_key(|k| job.index_of[&k.0]);
    let m = keep.len();
    npz::write(
        p,
        &[
            Array {
                name: "seeds".into(),
                shape: vec![m],
                data: Data::I64(keep.iter().map(|k| k.0 as i64).collect()),
            },
            Array {
                name: "x".into(),
                shape: vec![m, c, r, r],
                data: Data::F64(keep.iter().flat_map(|k| k.1.iter().copied()).collect()),
            },
            Array {
                name: "images".into(),
                shape: vec![m, r, r, c],
                data: Data::U8(keep.iter().flat_map(|k| k.2.iter().copied()).collect()),
            },
        ],
    )
}

/// Loads the network and what the sampling of its batches shares.
fn prepare<'a>(a: &'a Args, seeds: &[u64], device: DeviceSpec) -> Result<(NetDenoiser, Job<'a>)> {
    let precision = precision(a);
    precision.apply_global();
    let mut den = NetDenoiser::load(&a.network, Backend::new(a.runtime, device))?;
    den.set_precision(&precision);
    let info = den.info().clone();
    let dg = dg_settings(&a.dg)?;
    let guide = load_guide(a, &dg, &info)?;
    if let Some(k) = a.class {
        if k >= info.label_dim.max(1) || info.label_dim == 0 {
            bail!("--class {k}: the network has {} classes", info.label_dim);
        }
    }
    let settings = sampler_settings(a);
    if dg.is_some() && settings.ablation.is_some() {
        bail!("discriminator guidance uses the EDM sampler: drop --solver/--disc/--schedule/--scaling");
    }
    let given = Given::load(a, seeds.len(), &info)?;
    let job = Job {
        a,
        settings,
        dg,
        guide,
        given,
        index_of: seeds.iter().enumerate().map(|(i, &s)| (s, i)).collect(),
        seeds: seeds.len(),
        gen_device: tiw::device::select(device)?,
        info,
    };
    Ok((den, job))
}

/// The memory check before the first batch (`--max-memory` overrides the detected limit);
/// returns the line that reports it.
fn guard_memory(a: &Args, job: &Job, largest_batch: usize, device: DeviceSpec) -> Result<String> {
    let engine = match a.runtime {
        Runtime::Tch => tiw::train::memory::Engine::Tch,
        Runtime::Ort => tiw::train::memory::Engine::Ort,
        Runtime::Tract => tiw::train::memory::Engine::Tract,
    };
    tiw::train::memory::guard_sampling(
        &a.network,
        engine,
        !a.force_fp32,
        job.guide.as_ref(),
        largest_batch,
        device,
        a.max_memory,
    )
}

/// Runs `tiw generate`.
pub fn run(a: Args) -> Result<()> {
    if a.batch == 0 || a.steps == 0 {
        bail!("--batch and --steps must be positive");
    }
    // SIGTERM/SIGINT/SIGUSR1: stop at the next batch boundary (a second one: at once)
    tiw::train::preempt::install(&Default::default())?;
    let seeds = parse_seeds(&a.seeds)?;
    let (rank, world, device, quiet) = share(&a)?;
    let (mut den, job) = prepare(&a, &seeds, device)?;
    let (c, r) = (job.info.channels, job.info.resolution);
    let per = c * r * r;
    let batches = shard_batches(&seeds, a.batch, rank, world);
    let total: usize = batches.iter().map(Vec::len).sum();
    let largest = batches.iter().map(Vec::len).max().unwrap_or(0);
    let memory = guard_memory(&a, &job, largest, device)?;
    if !quiet {
        eprintln!("{memory}");
    }
    std::fs::create_dir_all(&a.outdir).with_context(|| format!("cannot create {}", a.outdir.display()))?;
    let bar = progress_bar(quiet, total, den.describe());
    let mut keep: Vec<(u64, Vec<f64>, Vec<u8>)> = Vec::new();
    let t0 = std::time::Instant::now();
    let (mut skipped, mut written) = (0, 0);
    for batch in &batches {
        if let Some(sig) = tiw::train::preempt::requested() {
            bar.finish_and_clear();
            bail!(
                "interrupted by {sig} at a batch boundary: {written} image(s) written by this run, every PNG complete (written to a temporary name, then renamed); rerun the same command with --resume to generate the rest"
            );
        }
        written += batch.len();
        if a.resume
            && a.out_npz.is_none()
            && batch.iter().all(|&s| png_path(&a.outdir, s, a.subdirs).exists())
        {
            skipped += batch.len();
            bar.inc(batch.len() as u64);
            continue;
        }
        let x = job.sample(&mut den, batch)?;
        let imgs = to_images(&x, batch.len(), c, r);
        for (b, &seed) in batch.iter().enumerate() {
            let img = &imgs[b * per..(b + 1) * per];
            tiw::sample::write_png(&png_path(&a.outdir, seed, a.subdirs), img, r, r, c)?;
            if a.out_npz.is_some() {
                keep.push((seed, x[b * per..(b + 1) * per].to_vec(), img.to_vec()));
            }
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    if let Some(p) = &a.out_npz {
        write_npz(p, keep, &job)?;
    }
    if !quiet {
        let done = total - skipped;
        let secs = t0.elapsed().as_secs_f64();
        let shard = if world > 1 {
            format!(" [shard {rank}/{world}]")
        } else {
            String::new()
        };
        eprintln!(
            "{done} images ({skipped} already present) in {:.1} s ({:.3} images/s) into {}{shard}",
            secs,
            done as f64 / secs.max(1e-9),
            a.outdir.display(),
        );
    }
    Ok(())
}
