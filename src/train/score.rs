//! The score-model training loop (EDM's `training_loop` with TIW's loss, SPEC §5.1):
//! gradient accumulation over rounds of `batch_gpu` images, learning-rate ramp-up, gradient
//! sanitising, Adam, EMA with half-life ramp-up, ticks with `stats.jsonl`/`log.txt`,
//! snapshots and training states (see [`super::checkpoint`]).
//!
//! Reproducibility: libtorch's global generator is re-seeded at the start of every step
//! from `(seed, step index)`, and the data order comes from a seeded sampler whose position
//! is saved, so a run resumed from a training state continues bit-exactly on the CPU (the
//! official loop seeds once; its draws cannot be replayed across processes anyway). The
//! generator is process-global: run one training loop per process at a time.
//!
//! The structure leaves room for data parallelism: gradients are complete after the
//! accumulation rounds and before [`sanitize_grads`], where an all-reduce would go.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};
use tiw_converters::{Json, TensorStore};
use tiw_models::config::NetConfig;
use tiw_models::edm::EdmDenoiser;
use tiw_models::guidance::Discriminator;
use tiw_models::tch_ops::TchOps;
use tiw_models::vb::{TensorKind, Weights};

use super::checkpoint::{self, Progress, State};
use super::loss::{evaluate, Augment, TorchDraws};
use super::options::{next_run_dir, TrainOptions};
use super::stats::{cpu_mem_gb, TickStats};
use super::step::{ema_beta, learning_rate, sanitize_grads, Adam};

/// What the loop needs from a dataset.
pub trait TrainData {
    /// Number of items.
    fn len(&self) -> usize;
    /// Whether there are no items.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Image side length.
    fn resolution(&self) -> usize;
    /// Image channels.
    fn channels(&self) -> usize;
    /// One-hot label dimension (0 without labels).
    fn label_dim(&self) -> usize;
    /// Name used in the run directory (dataset file stem).
    fn name(&self) -> String;
    /// Items `idx` as `x/127.5 − 1` f32 `[B, C, H, W]` and one-hot labels `[B, label_dim]`.
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)>;
}

/// An endless stream of dataset indices with a replayable position.
pub trait IndexStream {
    /// The next index.
    fn next_index(&mut self) -> usize;
    /// Indices handed out so far.
    fn position(&self) -> u64;
}

/// What a finished (or stopped) run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Images seen at the end.
    pub cur_nimg: u64,
    /// Whether the full duration was reached.
    pub done: bool,
    /// Snapshot files written (all formats).
    pub snapshots: Vec<PathBuf>,
    /// Training states written.
    pub states: Vec<PathBuf>,
    /// Mean `Loss/loss` of each tick.
    pub tick_losses: Vec<f64>,
}

/// The run's seed for step `step` (global generator re-seeded every step).
fn step_seed(seed: u64, step: u64) -> i64 {
    // splitmix64 of (seed, step): well-mixed, non-negative i64
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step.wrapping_add(1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// The network being trained: the denoiser, its named tensors (state_dict order) and the
/// indices of the parameters among them.
struct Trainee {
    net: EdmDenoiser<TchOps>,
    named: Vec<(String, Tensor)>,
    params: Vec<usize>,
}

fn build_net(ops: &TchOps, cfg: &NetConfig, init: Option<&TensorStore>, seed: u64) -> Result<Trainee> {
    let w = match init {
        Some(store) => Weights::from_store(ops, store)?,
        None => super::init::fresh_weights(ops, seed),
    };
    let net = EdmDenoiser::new(&w.root(), cfg)?;
    if init.is_some() {
        w.check_all_used()?;
    }
    let named = w.named()?;
    let params = named
        .iter()
        .enumerate()
        .filter(|(_, (_, k, _))| *k == TensorKind::Param)
        .map(|(i, _)| i)
        .collect();
    Ok(Trainee {
        net,
        named: named.into_iter().map(|(n, _, t)| (n, t.0)).collect(),
        params,
    })
}

/// Writes `text` to `path` atomically (temp file in the same folder + rename).
pub fn write_atomic(path: &Path, text: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(text)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file().sync_all().ok();
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {}", path.display(), e.error))?;
    Ok(())
}

/// Frozen TIW networks (feature extractor + discriminator).
struct TiwNets {
    ops: TchOps,
    extractor: tiw_models::adm::EncoderUNet<TchOps>,
    discriminator: tiw_models::adm::EncoderUNet<TchOps>,
}

/// Makes the index stream of a run's `seed`, positioned after `position` indices.
pub type SamplerFactory<'a> = dyn FnMut(u64, u64) -> Result<Box<dyn IndexStream>> + 'a;

/// Runs (or resumes) training. `data` feeds images in the order of the stream that
/// `sampler` makes; `augment` is the augment pipe (when `opts.augment > 0`); `log` receives
/// every status line (also written to `log.txt`).
pub fn train(
    opts: &TrainOptions,
    data: &dyn TrainData,
    sampler: &mut SamplerFactory,
    augment: Option<&dyn Augment>,
    device: Device,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary> {
    opts.validate()?;
    if data.is_empty() {
        bail!("{}: the dataset is empty", opts.data.display());
    }
    let label_dim = if opts.cond { data.label_dim() } else { 0 };
    if opts.cond && label_dim == 0 {
        bail!("--cond: {} has no labels (dataset.json)", opts.data.display());
    }

    // Resume source: our state (file or run directory) or the official .pt + .pkl pair.
    let mut resume_dir = None;
    let state: Option<State> = match &opts.resume {
        None => None,
        Some(p) if p.is_dir() => {
            let s = checkpoint::latest_state(p)?.with_context(|| {
                format!(
                    "--resume {}: no training-state-*.safetensors in this folder",
                    p.display()
                )
            })?;
            resume_dir = Some(p.clone());
            Some(checkpoint::read_state(&s, device)?)
        }
        Some(p) if p.extension().is_some_and(|e| e == "pt") => {
            let pkl = official_snapshot_for(p)?;
            let mut s = checkpoint::read_official_state(p, &pkl, device)?;
            // the official state records no seed: continue with this run's
            s.progress.seed = opts.seed;
            Some(s)
        }
        Some(p) => Some(checkpoint::read_state(p, device)?),
    };

    let config = match &state {
        Some(s) => s.config.clone(),
        None => opts.network_config(data.resolution(), data.channels(), label_dim),
    };
    let cfg = NetConfig::from_json(&config).context("network configuration")?;
    if cfg.img_resolution != data.resolution() || cfg.img_channels != data.channels() {
        bail!(
            "the network is for {}×{}×{} images but {} holds {}×{}×{}",
            cfg.img_channels,
            cfg.img_resolution,
            cfg.img_resolution,
            opts.data.display(),
            data.channels(),
            data.resolution(),
            data.resolution()
        );
    }
    if opts.augment > 0.0 && cfg.augment_dim() == 0 {
        bail!("--augment needs a network with augment_dim 9 (the resumed/transferred network has none); use --augment 0");
    }

    let run_dir = match (&opts.run_dir, resume_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d,
        (None, None) => next_run_dir(&opts.outdir, &opts.run_desc(&data.name()))?,
    };
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("creating the run directory {}", run_dir.display()))?;
    let mut log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("log.txt"))
        .with_context(|| format!("opening {}", run_dir.join("log.txt").display()))?;
    let mut say = |line: &str| {
        log(line);
        let _ = writeln!(log_file, "{line}");
    };
    write_atomic(
        &run_dir.join("training_options.json"),
        training_options_json(opts, &config, data, label_dim).as_bytes(),
    )?;

    // Network, EMA, optimiser.
    let ops = TchOps::trainable(device);
    let init_store = match (&state, &opts.transfer) {
        (Some(s), _) => Some(checkpoint::store_of(s.net.iter().map(|(n, t)| (n.as_str(), t)))?),
        (None, Some(t)) => Some(tiw_models::load::read(t)?.0),
        (None, None) => None,
    };
    tch::manual_seed(opts.seed as i64);
    let t = build_net(&ops, &cfg, init_store.as_ref(), opts.seed)?;
    let param_tensors: Vec<Tensor> = t.params.iter().map(|&i| t.named[i].1.shallow_clone()).collect();
    let mut ema: Vec<Tensor> = Vec::with_capacity(t.params.len());
    let mut adam = Adam::new(t.params.len(), 0.0);
    for (k, &i) in t.params.iter().enumerate() {
        let (name, p) = &t.named[i];
        let e = match state.as_ref().and_then(|s| s.ema.get(name)) {
            Some(e) => e.detach().to_kind(Kind::Float).copy(),
            None => p.detach().copy(),
        };
        ema.push(e);
        if let Some((m, v, s)) = state.as_ref().and_then(|s| s.adam.get(name)) {
            adam.state[k] = Some((m.shallow_clone(), v.shallow_clone(), *s));
        }
    }
    let n_params: i64 = param_tensors.iter().map(|p| p.numel() as i64).sum();

    // TIW networks.
    let loss = opts.loss();
    let tiw = match (&opts.extractor, &opts.discriminator) {
        (Some(fe), Some(dis)) => {
            let fo = TchOps::new(device);
            let extractor = tiw_models::load::encoder(&fo, fe, Some(data.resolution()))
                .with_context(|| format!("loading the feature extractor {}", fe.display()))?;
            let discriminator = tiw_models::load::encoder(&fo, dis, None)
                .with_context(|| format!("loading the discriminator {}", dis.display()))?;
            Some(TiwNets {
                ops: fo,
                extractor,
                discriminator,
            })
        }
        _ => None,
    };
    let dis = tiw.as_ref().map(|n| Discriminator {
        ops: n.ops,
        extractor: &n.extractor,
        discriminator: &n.discriminator,
    });

    // Counters.
    let progress = state.as_ref().map(|s| s.progress.clone()).unwrap_or(Progress {
        cur_nimg: 0,
        cur_tick: 0,
        sampler_position: 0,
        seed: opts.seed,
    });
    drop(state);
    // a resumed run keeps the seed its state was made with (draws and data order follow it)
    let seed = progress.seed;
    if seed != opts.seed && opts.resume.is_some() {
        say(&format!(
            "Resuming with the state's seed {seed} (--seed {} ignored)",
            opts.seed
        ));
    }
    let mut sampler = sampler(seed, progress.sampler_position)?;
    let batch = opts.batch;
    let batch_gpu = opts.batch_gpu();
    let rounds = batch / batch_gpu;
    let total_nimg = opts.total_nimg();
    let stop_nimg = opts.stop_kimg.map(|k| (k * 1000.0) as u64);
    let halflife_kimg = (opts.ema_mimg * 1000.0).trunc();
    let ema_rampup = if opts.transfer.is_some() {
        None
    } else {
        opts.ema_rampup
    };
    let mut cur_nimg = progress.cur_nimg;
    let mut cur_tick = progress.cur_tick;
    let mut step_index = cur_nimg / batch as u64;
    let mut tick_start_nimg = cur_nimg;
    let start = Instant::now();
    let mut tick_start_time = Instant::now();
    let mut maintenance = 0.0f64;
    let mut stats = TickStats::default();
    let mut summary = RunSummary {
        run_dir: run_dir.clone(),
        cur_nimg,
        done: false,
        snapshots: vec![],
        states: vec![],
        tick_losses: vec![],
    };
    say(&format!(
        "Training {} parameters on {device:?} for {} kimg (batch {batch}, {rounds} round(s) of {batch_gpu}), {} from {} kimg; run directory {}",
        n_params,
        total_nimg as f64 / 1000.0,
        if cur_nimg > 0 { "resuming" } else { "starting" },
        cur_nimg / 1000,
        run_dir.display()
    ));
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(total_nimg);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} train [{bar:30}] {pos}/{len} img  {per_sec} ETA {eta} {msg}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        b.set_position(cur_nimg);
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let stats_path = run_dir.join("stats.jsonl");

    if cur_nimg >= total_nimg {
        say(&format!(
            "Nothing to do: the state is at {:.1} kimg, the duration is {:.1} kimg",
            cur_nimg as f64 / 1000.0,
            total_nimg as f64 / 1000.0
        ));
        summary.done = true;
        return Ok(summary);
    }
    loop {
        tch::manual_seed(step_seed(seed, step_index));
        for (_, p) in &t.named {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.f_zero_()?;
            }
        }
        for _ in 0..rounds {
            let idx: Vec<usize> = (0..batch_gpu).map(|_| sampler.next_index()).collect();
            let (images, labels) = data.batch(&idx)?;
            let images = images.to_device(device);
            let labels = (label_dim > 0).then(|| labels.to_device(device));
            let out = evaluate(
                &loss,
                &t.net,
                &ops,
                &images,
                labels.as_ref(),
                &mut TorchDraws(device),
                dis.as_ref(),
                true,
                augment,
            )?;
            // 'Loss/loss' over the elements of the official loss tensor
            let (num, s, sq) = match &out.batch_weight {
                Some(_) => {
                    let (_, d) = out.tiw.as_ref().expect("TIW terms");
                    let w = d.f_mul_scalar(2.0)?;
                    let per = out.per_element.detach();
                    let n = (w.numel() * per.numel()) as f64;
                    let s = out.sum.double_value(&[]);
                    let sq = w.square().sum(Kind::Double).double_value(&[])
                        * per.square().sum(Kind::Double).double_value(&[]);
                    (n, s, sq)
                }
                None => {
                    let per = out.per_element.detach();
                    (
                        per.numel() as f64,
                        per.sum(Kind::Double).double_value(&[]),
                        per.square().sum(Kind::Double).double_value(&[]),
                    )
                }
            };
            stats.report_moments("Loss/loss", num, s, sq);
            out.sum.f_mul_scalar(1.0 / batch as f64)?.backward();
        }
        // (data parallel: all-reduce the gradients here)
        let lr = learning_rate(opts.lr, cur_nimg, opts.lr_rampup_kimg);
        sanitize_grads(&param_tensors)?;
        adam.step(&param_tensors, lr)?;
        let beta = ema_beta(batch, cur_nimg, halflife_kimg, ema_rampup);
        tch::no_grad(|| -> Result<()> {
            for (e, p) in ema.iter_mut().zip(&param_tensors) {
                let new = p.detach().f_lerp(e, beta)?;
                e.f_copy_(&new)?;
            }
            Ok(())
        })?;
        cur_nimg += batch as u64;
        step_index += 1;
        bar.set_position(cur_nimg.min(total_nimg));
        let done = cur_nimg >= total_nimg;
        let stop = !done && stop_nimg.is_some_and(|s| cur_nimg >= s);
        if !done && !stop && cur_tick != 0 && cur_nimg < tick_start_nimg + (opts.tick_kimg * 1000.0) as u64 {
            continue;
        }

        // End of a tick.
        let tick_end = Instant::now();
        let tick_sec = tick_end.duration_since(tick_start_time).as_secs_f64();
        let kimg_done = (cur_nimg - tick_start_nimg) as f64 / 1000.0;
        let loss_m = stats.get("Loss/loss").unwrap_or_default();
        summary.tick_losses.push(loss_m.mean());
        let line = format!(
            "tick {cur_tick:<5} kimg {:<9.1} time {:<12} sec/tick {:<7.1} sec/kimg {:<7.2} maintenance {:<6.1} cpumem {:<6.2} loss {:.4}",
            cur_nimg as f64 / 1000.0,
            format!("{:.0}s", start.elapsed().as_secs_f64()),
            tick_sec,
            tick_sec / kimg_done.max(1e-9),
            maintenance,
            cpu_mem_gb(),
            loss_m.mean()
        );
        bar.suspend(|| say(&line));
        bar.set_message(format!("loss {:.4}", loss_m.mean()));
        stats.report("Progress/tick", cur_tick as f64);
        stats.report("Progress/kimg", cur_nimg as f64 / 1000.0);
        stats.report("Timing/total_sec", start.elapsed().as_secs_f64());
        stats.report("Timing/sec_per_tick", tick_sec);
        stats.report("Timing/sec_per_kimg", tick_sec / kimg_done.max(1e-9));
        stats.report("Timing/maintenance_sec", maintenance);
        stats.report("Resources/cpu_mem_gb", cpu_mem_gb());

        let kimg = cur_nimg / 1000;
        let snap_due = done || stop || (opts.snap > 0 && cur_tick % opts.snap == 0);
        if snap_due {
            let mut named: Vec<(String, &Tensor)> = Vec::with_capacity(t.named.len());
            let mut k = 0;
            for (i, (n, tensor)) in t.named.iter().enumerate() {
                if t.params.get(k) == Some(&i) {
                    named.push((n.clone(), &ema[k]));
                    k += 1;
                } else {
                    named.push((n.clone(), tensor));
                }
            }
            let files = checkpoint::write_snapshot(&run_dir, kimg, &named, &config, opts.save_pt)?;
            summary.snapshots.extend(files);
        }
        let dump_due = done || stop || (opts.dump > 0 && cur_tick % opts.dump == 0 && cur_tick != 0);
        if dump_due {
            let path = run_dir.join(checkpoint::state_name(kimg));
            checkpoint::write_state(
                &path,
                &Progress {
                    cur_nimg,
                    cur_tick: cur_tick + 1,
                    sampler_position: sampler.position(),
                    seed,
                },
                &config,
                &t.named,
                &t.params,
                &ema,
                &adam,
            )?;
            summary.states.push(path);
        }
        stats.flush_to(&stats_path)?;
        maintenance = tick_end.elapsed().as_secs_f64();
        cur_tick += 1;
        tick_start_nimg = cur_nimg;
        tick_start_time = Instant::now();
        if done || stop {
            summary.done = done;
            break;
        }
    }
    bar.finish_and_clear();
    summary.cur_nimg = cur_nimg;
    say(&format!(
        "{} at {:.1} kimg after {:.0} s",
        if summary.done { "Done" } else { "Stopped" },
        cur_nimg as f64 / 1000.0,
        start.elapsed().as_secs_f64()
    ));
    Ok(summary)
}

/// The official snapshot matching `training-state-<kimg>.pt`: `network-snapshot-<kimg>.pkl`
/// in the same folder.
fn official_snapshot_for(pt: &Path) -> Result<PathBuf> {
    let kimg = checkpoint::kimg_of(pt)
        .with_context(|| format!("{}: expected training-state-<kimg>.pt", pt.display()))?;
    let pkl = pt.with_file_name(format!("network-snapshot-{kimg:06}.pkl"));
    if !pkl.is_file() {
        bail!(
            "--resume {}: the official state needs its EMA snapshot {} next to it",
            pt.display(),
            pkl.display()
        );
    }
    Ok(pkl)
}

/// `training_options.json`: the run's options in train.py's layout plus our switches.
fn training_options_json(
    opts: &TrainOptions,
    config: &Json,
    data: &dyn TrainData,
    label_dim: usize,
) -> String {
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| Json::Str(p.display().to_string()))
            .unwrap_or(Json::Null)
    };
    let loss_class = match opts.precond {
        super::options::PrecondChoice::TiwEdm => "training.loss.TIW_EDMLoss",
        super::options::PrecondChoice::Edm => "training.loss.EDMLoss",
        super::options::PrecondChoice::Vp => "training.loss.VPLoss",
        super::options::PrecondChoice::Ve => "training.loss.VELoss",
    };
    let mut o: Vec<(String, Json)> = vec![
        (
            "dataset_kwargs".into(),
            Json::Object(vec![
                (
                    "class_name".into(),
                    Json::Str("training.dataset.ImageFolderDataset".into()),
                ),
                ("path".into(), Json::Str(opts.data.display().to_string())),
                ("use_labels".into(), Json::Bool(opts.cond)),
                ("xflip".into(), Json::Bool(opts.xflip)),
                ("resolution".into(), Json::Int(data.resolution() as i64)),
                ("max_size".into(), Json::Int(data.len() as i64)),
            ]),
        ),
        (
            "network_kwargs".into(),
            config.get("network_kwargs").cloned().unwrap_or(Json::Null),
        ),
        (
            "loss_kwargs".into(),
            Json::Object(vec![("class_name".into(), Json::Str(loss_class.into()))]),
        ),
        (
            "optimizer_kwargs".into(),
            Json::Object(vec![
                ("class_name".into(), Json::Str("torch.optim.Adam".into())),
                ("lr".into(), Json::Float(opts.lr)),
                (
                    "betas".into(),
                    Json::Array(vec![Json::Float(0.9), Json::Float(0.999)]),
                ),
                ("eps".into(), Json::Float(1e-8)),
            ]),
        ),
    ];
    if opts.augment > 0.0 {
        o.push((
            "augment_kwargs".into(),
            Json::Object(vec![
                (
                    "class_name".into(),
                    Json::Str("training.augment.AugmentPipe".into()),
                ),
                ("p".into(), Json::Float(opts.augment)),
                ("xflip".into(), Json::Float(1e8)),
                ("yflip".into(), Json::Int(1)),
                ("scale".into(), Json::Int(1)),
                ("rotate_frac".into(), Json::Int(1)),
                ("aniso".into(), Json::Int(1)),
                ("translate_frac".into(), Json::Int(1)),
            ]),
        ));
    }
    let tiw = |v: Option<clap::builder::PossibleValue>| {
        Json::Str(v.map(|v| v.get_name().to_string()).unwrap_or_default())
    };
    o.extend([
        (
            "total_kimg".into(),
            Json::Float(opts.total_nimg() as f64 / 1000.0),
        ),
        (
            "ema_halflife_kimg".into(),
            Json::Float((opts.ema_mimg * 1000.0).trunc()),
        ),
        (
            "ema_rampup_ratio".into(),
            opts.ema_rampup.map(Json::Float).unwrap_or(Json::Null),
        ),
        ("lr_rampup_kimg".into(), Json::Float(opts.lr_rampup_kimg)),
        ("batch_size".into(), Json::Int(opts.batch as i64)),
        ("batch_gpu".into(), Json::Int(opts.batch_gpu() as i64)),
        ("loss_scaling".into(), Json::Int(1)),
        ("kimg_per_tick".into(), Json::Float(opts.tick_kimg)),
        ("snapshot_ticks".into(), Json::Int(opts.snap as i64)),
        ("state_dump_ticks".into(), Json::Int(opts.dump as i64)),
        ("seed".into(), Json::Int(opts.seed as i64)),
        ("label_dim".into(), Json::Int(label_dim as i64)),
        ("cla_path".into(), path(&opts.extractor)),
        ("dis_path".into(), path(&opts.discriminator)),
        ("resume".into(), path(&opts.resume)),
        ("transfer".into(), path(&opts.transfer)),
        (
            "tiw_weighting".into(),
            tiw(clap::ValueEnum::to_possible_value(&opts.tiw_weighting)),
        ),
        (
            "tiw_correction".into(),
            tiw(clap::ValueEnum::to_possible_value(&opts.tiw_correction)),
        ),
        ("step_reseeding".into(), Json::Bool(true)),
    ]);
    Json::Object(o).to_text_pretty()
}
