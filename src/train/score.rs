//! The score-model training loop (EDM's `training_loop` with TIW's loss, SPEC §5.1):
//! gradient accumulation over rounds of `batch_gpu` images, learning-rate ramp-up, gradient
//! sanitising, Adam, EMA with half-life ramp-up, ticks with `stats.jsonl`/`log.txt`,
//! snapshots and training states (see [`super::checkpoint`]).
//!
//! Data parallel (EDM's DDP loop): `--batch` is global; each of the `N` ranks (a
//! [`Collective`]) takes `batch / N` samples per step in rounds of `--batch-gpu`, its data
//! from its share of the sampler's stream (by default the `k`-th block of every step, so
//! the rounds of all ranks are the rounds of one process: see [`super::draws`]); gradients
//! are summed over ranks once per step,
//! after the last round (each rank's loss is scaled by `1 / batch`); Adam and the EMA run
//! identically on every rank; rank 0 alone writes logs, statistics, snapshots and states;
//! parameters and EMA are checked equal across ranks at every snapshot.
//!
//! Reproducibility: every draw (σ, noise, augmentation) is keyed by the sample's global
//! position in its step and the step's seed (see [`super::draws`]), and the data order
//! comes from a seeded sampler whose global position is saved, so a run resumed from a
//! training state continues bit-exactly on the CPU, on any world size (dropout masks aside,
//! which depend on the split). The generator is process-global: run one training loop per
//! process at a time.
//!
//! Stages: [`Trainer::open`] (resume or start: run directory, networks, optimiser state),
//! [`Trainer::step`] (one optimizer step), [`Trainer::end_tick`] (log, statistics,
//! snapshot, state); [`Trainer::run`] loops them.

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
use super::draws::{step_seed, Layout, PositionDraws, StepSplit};
use super::loss::{evaluate, Augment, Loss};
use super::options::{next_run_dir, SamplerSplit, TrainOptions};
use super::parallel::{check_consistency, sum_gradients, sum_moments, Collective, Solo};
use super::setup::{load_resume, training_options_json};
use super::stats::{cpu_mem_gb, Moments, TickStats};
use super::step::{ema_beta, learning_rate, sanitize_grads, zero_grads, Adam};

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
    /// Snapshot files written (all formats; rank 0 only).
    pub snapshots: Vec<PathBuf>,
    /// Training states written (rank 0 only).
    pub states: Vec<PathBuf>,
    /// Mean `Loss/loss` of each tick (over all ranks).
    pub tick_losses: Vec<f64>,
    /// The stop signal that ended the run early (`SIGTERM`…; see [`super::preempt`]).
    pub stopped_by: Option<String>,
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

fn load_tiw_nets(opts: &TrainOptions, resolution: usize, device: Device) -> Result<Option<TiwNets>> {
    let (Some(fe), Some(dis)) = (&opts.extractor, &opts.discriminator) else {
        return Ok(None);
    };
    let ops = TchOps::new(device);
    let extractor = tiw_models::load::encoder(&ops, fe, Some(resolution))
        .with_context(|| format!("loading the feature extractor {}", fe.display()))?;
    let discriminator = tiw_models::load::encoder(&ops, dis, None)
        .with_context(|| format!("loading the discriminator {}", dis.display()))?;
    Ok(Some(TiwNets {
        ops,
        extractor,
        discriminator,
    }))
}

/// Makes the index stream of a run's `seed`, positioned at global stream position
/// `position` (images consumed by all ranks).
pub type SamplerFactory<'a> = dyn FnMut(u64, u64) -> Result<Box<dyn IndexStream>> + 'a;

/// Runs (or resumes) training in one process. `data` feeds images in the order of the
/// stream that `sampler` makes; `augment` is the augment pipe (when `opts.augment > 0`);
/// `log` receives every status line (also written to `log.txt`).
pub fn train(
    opts: &TrainOptions,
    data: &dyn TrainData,
    sampler: &mut SamplerFactory,
    augment: Option<&dyn Augment>,
    device: Device,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary> {
    train_on(opts, data, sampler, augment, device, &Solo, log)
}

/// [`train`] as one rank of `comm` (the sampler factory makes this rank's stream).
pub fn train_on(
    opts: &TrainOptions,
    data: &dyn TrainData,
    sampler: &mut SamplerFactory,
    augment: Option<&dyn Augment>,
    device: Device,
    comm: &dyn Collective,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary> {
    Trainer::open(opts, data, sampler, augment, device, comm, log)?.run()
}

/// Status lines to the caller and `log.txt` (rank 0; other ranks stay quiet).
struct Logger<'a> {
    sink: &'a mut dyn FnMut(&str),
    file: Option<std::fs::File>,
    enabled: bool,
}

impl Logger<'_> {
    fn say(&mut self, line: &str) {
        if self.enabled {
            (self.sink)(line);
            if let Some(f) = &mut self.file {
                let _ = writeln!(f, "{line}");
            }
        }
    }
}

/// Counters and clocks of a run.
struct Clock {
    cur_nimg: u64,
    cur_tick: u64,
    step_index: u64,
    tick_start_nimg: u64,
    start: Instant,
    tick_start: Instant,
    maintenance: f64,
    /// Seconds spent summing gradients over ranks in this tick.
    allreduce: f64,
}

/// The optimisation state: parameters (views into the network), EMA copies, Adam, and on
/// more than one rank the flat buffer every gradient is a view into (one all-reduce).
struct Optim {
    params: Vec<Tensor>,
    ema: Vec<Tensor>,
    adam: Adam,
    flat_grads: Option<Tensor>,
}

/// A training run in progress (one rank's view).
pub struct Trainer<'a> {
    opts: &'a TrainOptions,
    data: &'a dyn TrainData,
    augment: Option<&'a dyn Augment>,
    device: Device,
    comm: &'a dyn Collective,
    log: Logger<'a>,
    run_dir: PathBuf,
    config: Json,
    label_dim: usize,
    loss: Loss,
    ops: TchOps,
    t: Trainee,
    optim: Optim,
    tiw: Option<TiwNets>,
    sampler: Box<dyn IndexStream>,
    split: StepSplit,
    seed: u64,
    total_nimg: u64,
    clock: Clock,
    stats: TickStats,
    summary: RunSummary,
    bar: indicatif::ProgressBar,
}

impl<'a> Trainer<'a> {
    /// Starts a run or resumes one (`opts.resume`): checks the data against the network,
    /// makes the run directory (rank 0), builds the network (identical on every rank:
    /// rank 0's tensors are broadcast), EMA and Adam state, and positions the sampler.
    pub fn open(
        opts: &'a TrainOptions,
        data: &'a dyn TrainData,
        sampler: &mut SamplerFactory,
        augment: Option<&'a dyn Augment>,
        device: Device,
        comm: &'a dyn Collective,
        log: &'a mut dyn FnMut(&str),
    ) -> Result<Self> {
        opts.validate()?;
        let (world, rank) = (comm.world_size(), comm.rank());
        let split = step_split(opts, world, rank)?;
        if data.is_empty() {
            bail!("{}: the dataset is empty", opts.data.display());
        }
        let label_dim = if opts.cond { data.label_dim() } else { 0 };
        if opts.cond && label_dim == 0 {
            bail!("--cond: {} has no labels (dataset.json)", opts.data.display());
        }
        let desc = opts.run_desc(&data.name(), world);
        let resumed = load_resume(opts, &desc, device)?;
        let (state, resume_dir) = (resumed.state, resumed.dir);
        let config = match &state {
            Some(s) => s.config.clone(),
            None => opts.network_config(data.resolution(), data.channels(), label_dim),
        };
        let cfg = NetConfig::from_json(&config).context("network configuration")?;
        check_data_fits(opts, &cfg, data)?;
        let run_dir = match (&opts.run_dir, resume_dir) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => d,
            (None, None) => next_run_dir(&opts.outdir, &desc)?,
        };
        let mut logger = Logger {
            sink: log,
            file: None,
            enabled: rank == 0,
        };
        if rank == 0 {
            logger.file = Some(open_log(&run_dir)?);
            if let Some(note) = &resumed.note {
                logger.say(note);
            }
            write_atomic(
                &run_dir.join("training_options.json"),
                training_options_json(opts, &config, data, label_dim, world).as_bytes(),
            )?;
        }

        // the process before the network exists: the memory estimate's runtime part
        let resident_before = super::memory::rss();
        let (ops, t, optim) = build_networks(opts, &cfg, state.as_ref(), device, comm)?;
        let tiw = load_tiw_nets(opts, data.resolution(), device)?;
        let n_params: u64 = optim.params.iter().map(|p| p.numel() as u64).sum();
        check_memory(
            opts,
            &cfg,
            n_params,
            split.batch_gpu,
            device,
            resident_before,
            &mut logger,
        )?;

        let progress = state.as_ref().map(|s| s.progress.clone()).unwrap_or(Progress {
            cur_nimg: 0,
            cur_tick: 0,
            sampler_position: 0,
            seed: opts.seed,
        });
        drop(state);
        // a resumed run keeps the seed its state was made with (draws and data order follow it)
        let seed = progress.seed;
        if seed != opts.seed && (opts.resume.is_some() || opts.resume_auto) {
            logger.say(&format!(
                "Resuming with the state's seed {seed} (--seed {} ignored)",
                opts.seed
            ));
        }
        let sampler = sampler(seed, progress.sampler_position)?;
        let total_nimg = opts.total_nimg();
        let cur_nimg = progress.cur_nimg;
        logger.say(&format!(
            "Training {n_params} parameters on {world} rank(s) ({device:?} here) for {} kimg (batch {}: {} round(s) of {} per rank), {} from {} kimg; run directory {}",
            total_nimg as f64 / 1000.0,
            opts.batch,
            split.rounds(),
            split.batch_gpu,
            if cur_nimg > 0 { "resuming" } else { "starting" },
            cur_nimg / 1000,
            run_dir.display()
        ));
        let bar = progress_bar(opts.progress && rank == 0, total_nimg, cur_nimg);
        Ok(Trainer {
            opts,
            data,
            augment,
            device,
            comm,
            log: logger,
            summary: RunSummary {
                run_dir: run_dir.clone(),
                cur_nimg,
                done: false,
                snapshots: vec![],
                states: vec![],
                tick_losses: vec![],
                stopped_by: None,
            },
            run_dir,
            config,
            label_dim,
            loss: opts.loss(),
            ops,
            t,
            optim,
            tiw,
            sampler,
            split,
            seed,
            total_nimg,
            clock: Clock {
                cur_nimg,
                cur_tick: progress.cur_tick,
                step_index: cur_nimg / opts.batch as u64,
                tick_start_nimg: cur_nimg,
                start: Instant::now(),
                tick_start: Instant::now(),
                maintenance: 0.0,
                allreduce: 0.0,
            },
            stats: TickStats::default(),
            bar,
        })
    }

    /// Runs steps and ticks until the duration (or `--stop-kimg`) is reached.
    pub fn run(mut self) -> Result<RunSummary> {
        if self.clock.cur_nimg >= self.total_nimg {
            self.log.say(&format!(
                "Nothing to do: the state is at {:.1} kimg, the duration is {:.1} kimg",
                self.clock.cur_nimg as f64 / 1000.0,
                self.total_nimg as f64 / 1000.0
            ));
            self.summary.done = true;
            return Ok(self.summary);
        }
        let stop_nimg = self.opts.stop_kimg.map(|k| (k * 1000.0) as u64);
        let tick_nimg = (self.opts.tick_kimg * 1000.0) as u64;
        loop {
            self.step()?;
            let c = &self.clock;
            let done = c.cur_nimg >= self.total_nimg;
            let stop = !done && stop_nimg.is_some_and(|s| c.cur_nimg >= s);
            let signal = if done || stop { None } else { self.stop_signal()? };
            let tick_over = c.cur_tick == 0 || c.cur_nimg >= c.tick_start_nimg + tick_nimg;
            if !done && !stop && signal.is_none() && !tick_over {
                continue;
            }
            if let Some(sig) = &signal {
                self.log.say(&format!(
                    "{sig} received: stopping after step {} ({:.3} kimg), writing a training state",
                    self.clock.step_index,
                    self.clock.cur_nimg as f64 / 1000.0
                ));
            }
            self.end_tick_as(done || stop, signal.is_some())?;
            if done || stop || signal.is_some() {
                self.summary.done = done;
                self.summary.stopped_by = signal;
                break;
            }
        }
        self.bar.finish_and_clear();
        self.summary.cur_nimg = self.clock.cur_nimg;
        let line = format!(
            "{} at {:.1} kimg after {:.0} s",
            match (&self.summary.stopped_by, self.summary.done) {
                (Some(sig), _) => format!("Stopped by {sig}"),
                (None, true) => "Done".into(),
                (None, false) => "Stopped".into(),
            },
            self.clock.cur_nimg as f64 / 1000.0,
            self.clock.start.elapsed().as_secs_f64()
        );
        self.log.say(&line);
        if let Some(peak) = super::memory::peak_rss() {
            self.log.say(&format!(
                "Peak resident memory (VmHWM): {}",
                super::memory::gb(peak)
            ));
        }
        Ok(self.summary)
    }

    /// Whether a stop signal arrived at any rank (collective: every rank calls it after
    /// every step, so all stop at the same step). The signal's name, or a note when it
    /// arrived at another rank only.
    fn stop_signal(&self) -> Result<Option<String>> {
        let mine = super::preempt::requested();
        if self.comm.world_size() == 1 {
            return Ok(mine);
        }
        let any = super::parallel::any_rank(self.comm, mine.is_some())?;
        Ok(any.then(|| mine.unwrap_or_else(|| "a stop signal (at another rank)".into())))
    }

    /// One optimizer step: this rank's accumulation rounds, gradients summed over ranks,
    /// sanitised, Adam, EMA.
    pub fn step(&mut self) -> Result<()> {
        let seed = step_seed(self.seed, self.clock.step_index);
        zero_grads(&self.optim.params)?;
        for round in 0..self.split.rounds() {
            self.round(round, seed)?;
        }
        let t_reduce = Instant::now();
        sum_gradients(self.comm, &self.optim.params, self.optim.flat_grads.as_ref())?;
        self.clock.allreduce += t_reduce.elapsed().as_secs_f64();
        let batch = self.opts.batch;
        let lr = learning_rate(self.opts.lr, self.clock.cur_nimg, self.opts.lr_rampup_kimg);
        sanitize_grads(&self.optim.params)?;
        self.optim.adam.step(&self.optim.params, lr)?;
        let ema_rampup = if self.opts.transfer.is_some() {
            None
        } else {
            self.opts.ema_rampup
        };
        let halflife_kimg = (self.opts.ema_mimg * 1000.0).trunc();
        let beta = ema_beta(batch, self.clock.cur_nimg, halflife_kimg, ema_rampup);
        tch::no_grad(|| -> Result<()> {
            for (e, p) in self.optim.ema.iter_mut().zip(&self.optim.params) {
                let new = p.detach().f_lerp(e, beta)?;
                e.f_copy_(&new)?;
            }
            Ok(())
        })?;
        self.clock.cur_nimg += batch as u64;
        self.clock.step_index += 1;
        self.bar.set_position(self.clock.cur_nimg.min(self.total_nimg));
        Ok(())
    }

    /// One accumulation round: this rank's next `batch_gpu` images, the loss with draws
    /// keyed by global position, its backward pass scaled by `1 / global batch`.
    fn round(&mut self, round: usize, seed: i64) -> Result<()> {
        let idx: Vec<usize> = (0..self.split.batch_gpu)
            .map(|_| self.sampler.next_index())
            .collect();
        let (images, labels) = self.data.batch(&idx)?;
        let images = images.to_device(self.device);
        let labels = (self.label_dim > 0).then(|| labels.to_device(self.device));
        let dis = self.tiw.as_ref().map(|n| Discriminator {
            ops: n.ops,
            extractor: &n.extractor,
            discriminator: &n.discriminator,
        });
        let mut draws = PositionDraws::start_round(self.device, self.split, round, seed)?;
        let out = evaluate(
            &self.loss,
            &self.t.net,
            &self.ops,
            &images,
            labels.as_ref(),
            &mut draws,
            dis.as_ref(),
            true,
            self.augment,
        )?;
        let (num, s, sq) = loss_moments(&out)?;
        self.stats.report_moments("Loss/loss", num, s, sq);
        out.sum
            .f_mul_scalar(self.opts.loss_scaling / self.opts.batch as f64)?
            .backward();
        Ok(())
    }

    /// The end of a tick: the log line and `stats.jsonl` (statistics summed over ranks),
    /// a snapshot and a training state when due (`last`: always). Collective: every rank
    /// calls it at the same step.
    pub fn end_tick(&mut self, last: bool) -> Result<()> {
        self.end_tick_as(last, false)
    }

    /// [`Self::end_tick`]; `preempted`: a stop signal ends the run here, so the state is
    /// written whatever the schedule says, the snapshot only when the schedule has one due.
    fn end_tick_as(&mut self, last: bool, preempted: bool) -> Result<()> {
        let tick_end = Instant::now();
        let c = &self.clock;
        let tick_sec = tick_end.duration_since(c.tick_start).as_secs_f64();
        let kimg_done = (c.cur_nimg - c.tick_start_nimg) as f64 / 1000.0;
        let mine = self.stats.get("Loss/loss").unwrap_or_default();
        let all = sum_moments(self.comm, &[(mine.num, mine.sum, mine.sum_sq)])?[0];
        let loss_m = Moments {
            num: all.0,
            sum: all.1,
            sum_sq: all.2,
        };
        self.stats.set("Loss/loss", loss_m);
        self.summary.tick_losses.push(loss_m.mean());
        let line = format!(
            "tick {:<5} kimg {:<9.1} time {:<12} sec/tick {:<7.1} sec/kimg {:<7.2} maintenance {:<6.1} cpumem {:<6.2} loss {:.4}",
            c.cur_tick,
            c.cur_nimg as f64 / 1000.0,
            format!("{:.0}s", c.start.elapsed().as_secs_f64()),
            tick_sec,
            tick_sec / kimg_done.max(1e-9),
            c.maintenance,
            cpu_mem_gb(),
            loss_m.mean()
        );
        let log = &mut self.log;
        self.bar.suspend(|| log.say(&line));
        self.bar.set_message(format!("loss {:.4}", loss_m.mean()));
        for (name, x) in [
            ("Progress/tick", c.cur_tick as f64),
            ("Progress/kimg", c.cur_nimg as f64 / 1000.0),
            ("Timing/total_sec", c.start.elapsed().as_secs_f64()),
            ("Timing/sec_per_tick", tick_sec),
            ("Timing/sec_per_kimg", tick_sec / kimg_done.max(1e-9)),
            ("Timing/maintenance_sec", c.maintenance),
            ("Timing/allreduce_sec", c.allreduce),
            ("Resources/cpu_mem_gb", cpu_mem_gb()),
        ] {
            self.stats.report(name, x);
        }
        let tick = c.cur_tick;
        let snap_due = last || (self.opts.snap > 0 && tick % self.opts.snap == 0);
        if snap_due {
            self.save_snapshot()?;
        }
        let dump_due = last || preempted || (self.opts.dump > 0 && tick % self.opts.dump == 0 && tick != 0);
        if dump_due {
            self.save_state()?;
        }
        if self.comm.rank() == 0 {
            self.stats.flush_to(&self.run_dir.join("stats.jsonl"))?;
        } else {
            self.stats.clear();
        }
        self.clock.maintenance = tick_end.elapsed().as_secs_f64();
        self.clock.cur_tick += 1;
        self.clock.tick_start_nimg = self.clock.cur_nimg;
        self.clock.tick_start = Instant::now();
        self.clock.allreduce = 0.0;
        Ok(())
    }

    /// The EMA network's snapshot (rank 0 writes it after every rank's network and EMA
    /// were found equal to rank 0's).
    fn save_snapshot(&mut self) -> Result<()> {
        let mut named: Vec<(String, &Tensor)> = Vec::with_capacity(self.t.named.len());
        let mut k = 0;
        for (i, (n, tensor)) in self.t.named.iter().enumerate() {
            if self.t.params.get(k) == Some(&i) {
                named.push((n.clone(), &self.optim.ema[k]));
                k += 1;
            } else {
                named.push((n.clone(), tensor));
            }
        }
        if self.comm.world_size() > 1 {
            let net: Vec<(String, &Tensor)> = self.t.named.iter().map(|(n, t)| (n.clone(), t)).collect();
            check_consistency(self.comm, &net, "network tensors")?;
            check_consistency(self.comm, &named, "EMA tensors")?;
        }
        if self.comm.rank() == 0 {
            let kimg = self.clock.cur_nimg / 1000;
            let files =
                checkpoint::write_snapshot(&self.run_dir, kimg, &named, &self.config, self.opts.save_pt)?;
            self.summary.snapshots.extend(files);
        }
        Ok(())
    }

    /// The training state (rank 0): network, EMA, Adam, counters, global sampler position.
    fn save_state(&mut self) -> Result<()> {
        if self.comm.rank() != 0 {
            return Ok(());
        }
        let kimg = self.clock.cur_nimg / 1000;
        let path = self.run_dir.join(checkpoint::state_name(kimg));
        checkpoint::write_state(
            &path,
            &Progress {
                cur_nimg: self.clock.cur_nimg,
                cur_tick: self.clock.cur_tick + 1,
                sampler_position: self.sampler.position(),
                seed: self.seed,
            },
            &self.config,
            &self.t.named,
            &self.t.params,
            &self.optim.ema,
            &self.optim.adam,
        )?;
        self.summary.states.push(path);
        Ok(())
    }
}

/// How this rank's share of a step is laid out (`--sampler-split`, `--batch-gpu`).
fn step_split(opts: &TrainOptions, world: usize, rank: usize) -> Result<StepSplit> {
    let layout = match opts.sampler_split {
        SamplerSplit::Global => Layout::Blocked,
        SamplerSplit::Rank => Layout::Interleaved,
    };
    StepSplit::with_layout(opts.batch, world, rank, opts.batch_gpu_for(world)?, layout)
}

/// The network being trained (from the state, `--transfer` or a fresh seeded init; rank 0's
/// tensors broadcast to every rank, as DDP's constructor does), its EMA and Adam state, and
/// on several ranks the flat gradient buffer. Applies the official loop's precision
/// settings first: cuDNN benchmark per `--bench`, TF32 off (`--tf32` is an extension).
fn build_networks(
    opts: &TrainOptions,
    cfg: &NetConfig,
    state: Option<&State>,
    device: Device,
    comm: &dyn Collective,
) -> Result<(TchOps, Trainee, Optim)> {
    tiw_models::tch_ops::set_allow_tf32(opts.tf32);
    if matches!(device, Device::Cuda(_)) {
        tch::Cuda::cudnn_set_benchmark(opts.cudnn_benchmark);
    }
    let ops = TchOps::trainable(device);
    let init_store = match (state, &opts.transfer) {
        (Some(s), _) => Some(checkpoint::store_of(s.net.iter().map(|(n, t)| (n.as_str(), t)))?),
        (None, Some(t)) => Some(tiw_models::load::read(t)?.0),
        (None, None) => None,
    };
    tch::manual_seed(opts.seed as i64);
    let t = build_net(&ops, cfg, init_store.as_ref(), opts.seed)?;
    drop(init_store);
    let all: Vec<&Tensor> = t.named.iter().map(|(_, x)| x).collect();
    tch::no_grad(|| comm.broadcast(&all, 0))?;
    let mut optim = optim_state(&t, state)?;
    if comm.world_size() > 1 {
        optim.flat_grads = Some(crate::dist::flat_gradients(&optim.params)?);
    }
    Ok((ops, t, optim))
}

/// The network must take the dataset's images; augmentation needs `augment_dim`.
fn check_data_fits(opts: &TrainOptions, cfg: &NetConfig, data: &dyn TrainData) -> Result<()> {
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
    Ok(())
}

/// The memory guard (see [`super::memory`]): logs the estimate of one step's peak and
/// stops when it exceeds the device's limit (or `--max-memory`).
fn check_memory(
    opts: &TrainOptions,
    cfg: &NetConfig,
    n_params: u64,
    batch_gpu: usize,
    device: Device,
    resident_before: f64,
    log: &mut Logger,
) -> Result<()> {
    use super::memory::{device_limit, estimate, gb, rss, step_need};
    let est = estimate(cfg, n_params, 0, batch_gpu, resident_before);
    let limit = match opts.max_memory_gb {
        Some(g) => Some((g * 1e9, "--max-memory".to_string())),
        None => device_limit(device, rss())
            .map_err(|e| anyhow::anyhow!("memory check: {e:#}; set the limit with --max-memory GB"))?,
    };
    let res = cfg.img_resolution;
    log.say(&format!(
        "Memory: estimated peak {} per step (weights and Adam {}, activations {} for {batch_gpu} image(s) of {res}×{res} per round, runtime {}); limit {}",
        gb(est.total()),
        gb(est.weights),
        gb(est.activations),
        gb(est.runtime),
        limit
            .as_ref()
            .map(|(l, from)| format!("{} ({from})", gb(*l)))
            .unwrap_or_else(|| "not checked (no free-memory query for this device; --max-memory GB sets one)".into())
    ));
    let Some((limit, from)) = limit else {
        return Ok(());
    };
    if step_need(&est, n_params, device) <= limit {
        return Ok(());
    }
    let per_image = est.activations / batch_gpu.max(1) as f64;
    bail!(
        "not enough memory: one training step needs about {} (weights and Adam {}, activations {} for --batch-gpu {batch_gpu} at {res}×{res}, runtime {}), but the limit is {} ({from}). \
         {} holds {res}×{res} images and the network is built for that resolution{}; lower --batch-gpu (each image per round adds about {}), train on smaller images, shrink --cbase/--cres, or set --max-memory GB if the limit is wrong",
        gb(est.total()),
        gb(est.weights),
        gb(est.activations),
        gb(est.runtime),
        gb(limit),
        opts.data.display(),
        if res > 256 { " (if you meant a smaller resolution, resize the dataset, e.g. dataset_tool.py --resolution)" } else { "" },
        gb(per_image)
    );
}

/// Creates the run directory and opens its `log.txt` for appending.
fn open_log(run_dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("creating the run directory {}", run_dir.display()))?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("log.txt"))
        .with_context(|| format!("opening {}", run_dir.join("log.txt").display()))
}

/// Parameters, EMA (from the state or a copy of the parameters) and Adam state.
fn optim_state(t: &Trainee, state: Option<&State>) -> Result<Optim> {
    let params: Vec<Tensor> = t.params.iter().map(|&i| t.named[i].1.shallow_clone()).collect();
    let mut ema = Vec::with_capacity(t.params.len());
    let mut adam = Adam::new(t.params.len(), 0.0);
    for (k, &i) in t.params.iter().enumerate() {
        let (name, p) = &t.named[i];
        let e = match state.and_then(|s| s.ema.get(name)) {
            Some(e) => e.detach().f_to_kind(Kind::Float)?.copy(),
            None => p.detach().copy(),
        };
        ema.push(e);
        if let Some((m, v, s)) = state.and_then(|s| s.adam.get(name)) {
            adam.state[k] = Some((m.shallow_clone(), v.shallow_clone(), *s));
        }
    }
    Ok(Optim {
        params,
        ema,
        adam,
        flat_grads: None,
    })
}

/// `Loss/loss` moments `(count, Σ, Σ²)` over the elements of the official loss tensor (TIW
/// official: the `(N, 1, 1, N, C, H, W)` broadcast, computed without materialising it).
fn loss_moments(out: &super::loss::LossOut) -> Result<(f64, f64, f64)> {
    let per = out.per_element.detach();
    match (&out.batch_weight, &out.tiw) {
        (Some(_), Some((_, d))) => {
            let w = d.f_mul_scalar(2.0)?;
            let n = (w.numel() * per.numel()) as f64;
            let s = out.sum.double_value(&[]);
            let sq = w.f_square()?.f_sum(Kind::Double)?.double_value(&[])
                * per.f_square()?.f_sum(Kind::Double)?.double_value(&[]);
            Ok((n, s, sq))
        }
        _ => Ok((
            per.numel() as f64,
            per.f_sum(Kind::Double)?.double_value(&[]),
            per.f_square()?.f_sum(Kind::Double)?.double_value(&[]),
        )),
    }
}

fn progress_bar(show: bool, total_nimg: u64, cur_nimg: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
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
}
