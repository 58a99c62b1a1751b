//! `tiw generate`: EDM sampling to PNG files laid out like generate.py, on ort, tract or tch,
//! shardable across machines.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tiw::device::DeviceSpec;
use tiw::npz::{self, Array, Data};
use tiw::onnx_export::OnnxRuntime;
use tiw::precision::TchPrecision;
use tiw::sample::denoiser::{Denoiser, OnnxDenoiser, TchDenoiser};
use tiw::sample::dg::{dg_sample, DgGuide, DgSettings};
use tiw::sample::noise;
use tiw::sample::sampler::{
    ablation_sample, edm_sample, to_images, Ablation, Disc, SamplerSettings, Scaling, Schedule, Solver,
};
use tiw::sample::seeds::{parse_seeds, parse_shard, shard_batches};

use super::forward::Runtime;

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

/// Runs `tiw generate`.
pub fn run(a: Args) -> Result<()> {
    if a.batch == 0 || a.steps == 0 {
        bail!("--batch and --steps must be positive");
    }
    // PyTorch's defaults unless asked otherwise; the parity mode (pinned latents or noise)
    // always runs strict f32
    let _ = a.allow_tf32;
    let precision = if a.latents.is_some() || a.noise.is_some() {
        TchPrecision::STRICT
    } else {
        TchPrecision {
            force_fp32: a.force_fp32,
            strict_f32: a.strict_f32,
        }
    };
    precision.apply_global();
    // SIGTERM/SIGINT/SIGUSR1: stop at the next batch boundary (a second one: at once)
    tiw::train::preempt::install(&Default::default())?;
    let seeds = parse_seeds(&a.seeds)?;
    // under a launcher (torchrun, srun, `tiw launch`) each rank takes its share of the
    // seeds exactly as --shard RANK/WORLD_SIZE would, on its local GPU
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
    let mut den: Box<dyn Denoiser> = match a.runtime {
        Runtime::Tch => {
            let mut d = TchDenoiser::load(&a.network, device)?;
            d.set_precision(&precision);
            Box::new(d)
        }
        Runtime::Ort => Box::new(OnnxDenoiser::load(&a.network, OnnxRuntime::Ort, device)?),
        Runtime::Tract => Box::new(OnnxDenoiser::load(&a.network, OnnxRuntime::Tract, device)?),
    };
    let info = den.info().clone();
    let (c, r) = (info.channels, info.resolution);
    let per = c * r * r;
    let dg = dg_settings(&a.dg)?;
    let guide = match (&dg, &a.dg.extractor, &a.dg.discriminator) {
        (Some(_), Some(fe), Some(dis)) => {
            let g = DgGuide::load(fe, dis, a.device, r)?;
            g.check_fits(c, r, info.label_dim, a.dg.cond)?;
            Some(g)
        }
        _ => None,
    };
    if let Some(k) = a.class {
        if k >= info.label_dim.max(1) || info.label_dim == 0 {
            bail!("--class {k}: the network has {} classes", info.label_dim);
        }
    }
    let ablation = (a.solver.is_some() || a.disc.is_some() || a.schedule.is_some() || a.scaling.is_some())
        .then(|| Ablation {
            solver: a.solver.unwrap_or(Solver::Heun),
            disc: a.disc.unwrap_or(Disc::Edm),
            schedule: a.schedule.unwrap_or(Schedule::Linear),
            scaling: a.scaling.unwrap_or(Scaling::None),
        });
    let settings = SamplerSettings {
        num_steps: a.steps,
        sigma_min: a.sigma_min,
        sigma_max: a.sigma_max,
        rho: a.rho,
        s_churn: a.s_churn,
        s_min: a.s_min,
        s_max: a.s_max,
        s_noise: a.s_noise,
        ablation,
    };
    if dg.is_some() && settings.ablation.is_some() {
        bail!("discriminator guidance uses the EDM sampler: drop --solver/--disc/--schedule/--scaling");
    }
    // Parity mode inputs (seed order = position in --seeds).
    let mut given_labels = None;
    let given_latents = match &a.latents {
        Some(p) => {
            let arrays = npz::read(p)?;
            let l = npz::get(&arrays, "latents", p)?;
            if l.shape != [seeds.len(), c, r, r] {
                bail!(
                    "{}: latents has shape {:?}; expected ({}, {c}, {r}, {r}) for {} seeds",
                    p.display(),
                    l.shape,
                    seeds.len(),
                    seeds.len()
                );
            }
            if let Some(cl) = arrays.iter().find(|x| x.name == "class_labels") {
                if cl.shape != [seeds.len(), info.label_dim] {
                    bail!(
                        "{}: class_labels has shape {:?}; expected ({}, {})",
                        p.display(),
                        cl.shape,
                        seeds.len(),
                        info.label_dim
                    );
                }
                given_labels = Some(cl.to_f32());
            }
            Some(l.to_f32())
        }
        None => None,
    };
    let given_noise = match &a.noise {
        Some(p) => {
            let arrays = npz::read(p)?;
            let nz = npz::get(&arrays, "randn", p)?;
            if nz.shape != [a.steps, seeds.len(), c, r, r] {
                bail!(
                    "{}: randn has shape {:?}; expected ({}, {}, {c}, {r}, {r})",
                    p.display(),
                    nz.shape,
                    a.steps,
                    seeds.len()
                );
            }
            Some(nz.to_f64())
        }
        None => None,
    };
    let gen_device = tiw::device::select(device)?;
    let index_of: std::collections::HashMap<u64, usize> =
        seeds.iter().enumerate().map(|(i, &s)| (s, i)).collect();
    let batches = shard_batches(&seeds, a.batch, rank, world);
    let total: usize = batches.iter().map(Vec::len).sum();
    let largest = batches.iter().map(Vec::len).max().unwrap_or(0);
    let engine = match a.runtime {
        Runtime::Tch => tiw::train::memory::Engine::Tch,
        Runtime::Ort => tiw::train::memory::Engine::Ort,
        Runtime::Tract => tiw::train::memory::Engine::Tract,
    };
    let line = tiw::train::memory::guard_sampling(
        &a.network,
        engine,
        !a.force_fp32,
        guide.as_ref(),
        largest,
        device,
        a.max_memory,
    )?;
    if !quiet {
        eprintln!("{line}");
    }
    std::fs::create_dir_all(&a.outdir).with_context(|| format!("cannot create {}", a.outdir.display()))?;
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
    bar.set_message(format!("generating with {}", den.describe()));
    // DG's boosting adds churn to some samples: draw the per-step noise then too.
    let churn_used = settings.s_churn > 0.0 || dg.is_some_and(|d| d.boosting);
    let mut keep: Vec<(u64, Vec<f64>, Vec<u8>)> = Vec::new();
    let t0 = std::time::Instant::now();
    let mut skipped = 0;
    let mut written = 0;
    for batch in &batches {
        if let Some(sig) = tiw::train::preempt::requested() {
            bar.finish_and_clear();
            bail!(
                "interrupted by {sig} at a batch boundary: {written} image(s) written by this run, every PNG complete (written to a temporary name, then renamed); rerun the same command with --resume to generate the rest"
            );
        }
        written += batch.len();
        let n = batch.len();
        if a.resume
            && a.out_npz.is_none()
            && batch.iter().all(|&s| png_path(&a.outdir, s, a.subdirs).exists())
        {
            skipped += n;
            bar.inc(n as u64);
            continue;
        }
        let need_steps = if churn_used && given_noise.is_none() {
            a.steps
        } else {
            0
        };
        let mut drawn = noise::draw(batch, c, r, info.label_dim, need_steps, a.class, gen_device)?;
        if let Some(l) = &given_latents {
            drawn.latents = batch
                .iter()
                .flat_map(|s| l[index_of[s] * per..(index_of[s] + 1) * per].iter().copied())
                .collect();
        }
        if let Some(cl) = &given_labels {
            let ld = info.label_dim;
            drawn.labels = Some(
                batch
                    .iter()
                    .flat_map(|s| cl[index_of[s] * ld..(index_of[s] + 1) * ld].iter().copied())
                    .collect(),
            );
        }
        let zeros = vec![0f64; n * per];
        let mut step_noise = |i: usize| -> Result<Vec<f64>> {
            if let Some(nz) = &given_noise {
                let base = i * seeds.len() * per;
                return Ok(batch
                    .iter()
                    .flat_map(|s| {
                        nz[base + index_of[s] * per..base + (index_of[s] + 1) * per]
                            .iter()
                            .copied()
                    })
                    .collect());
            }
            Ok(if drawn.steps.is_empty() {
                zeros.clone()
            } else {
                drawn.steps[i].clone()
            })
        };
        let (x, _) = if let Some(dgs) = &dg {
            let x = dg_sample(
                den.as_mut(),
                guide.as_ref(),
                &drawn.latents,
                n,
                drawn.labels.as_deref(),
                a.dg.cond,
                &settings,
                dgs,
                &mut step_noise,
                None,
            )?;
            (x, Vec::new())
        } else if settings.ablation.is_some() {
            ablation_sample(
                den.as_mut(),
                &drawn.latents,
                n,
                drawn.labels.as_deref(),
                &settings,
                &mut step_noise,
            )?
        } else {
            edm_sample(
                den.as_mut(),
                &drawn.latents,
                n,
                drawn.labels.as_deref(),
                &settings,
                &mut step_noise,
            )?
        };
        let imgs = to_images(&x, n, c, r);
        for (b, &seed) in batch.iter().enumerate() {
            let img = &imgs[b * r * r * c..(b + 1) * r * r * c];
            tiw::sample::write_png(&png_path(&a.outdir, seed, a.subdirs), img, r, r, c)?;
            if a.out_npz.is_some() {
                keep.push((seed, x[b * per..(b + 1) * per].to_vec(), img.to_vec()));
            }
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if let Some(p) = &a.out_npz {
        keep.sort_by_key(|k| index_of[&k.0]);
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
        )?;
    }
    if !quiet {
        let done = total - skipped;
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "{done} images ({skipped} already present) in {:.1} s ({:.3} images/s) into {}{}",
            secs,
            done as f64 / secs.max(1e-9),
            a.outdir.display(),
            if world > 1 {
                format!(" [shard {rank}/{world}]")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
