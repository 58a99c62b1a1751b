//! Time-dependent discriminator training (`train_classifier.py`, SPEC §4): real (`--ref`,
//! label 1, tiled `real_mul` times) vs biased (`--bias`, label 0) images, noised at an
//! importance-sampled VP time, through a frozen ADM feature extractor into the ADM
//! discriminator, BCE + Adam. Checkpoints `discriminator_{i+1}.pt` after every iteration
//! `i` with `i % save_every == 0` (the official names), a resumable training state and
//! `stats.jsonl`.
//!
//! Randomness: the discriminator init uses libtorch's generator seeded with `seed`
//! (`Weights::init`); iteration `i` reseeds it with `step_seed(seed, i)` before its two
//! draws (u, z), and the data order comes from [`data::SplitMix`] samplers — so a resumed
//! run continues bit for bit (on CPU) where an uninterrupted one would be.

pub mod data;
pub mod state;
pub mod step;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};
use tiw_models::adm::{EncoderConfig, EncoderUNet};
use tiw_models::tch_ops::TchOps;
use tiw_models::vb::{TensorKind, Weights};

use crate::train::draws::StepSplit;
use crate::train::parallel::{Collective, Solo};
use crate::train::step::Adam;
use data::{load_images, load_labelled, EpochSampler, ImageSet, SplitMix};
use step::DiscNets;

/// Options of a discriminator training run (the script's flags).
#[derive(Debug, Clone)]
pub struct ClassifierOpts {
    /// Reference (real, unbiased) images: npz `samples` uint8 (N, H, W, C); label 1.
    pub ref_path: PathBuf,
    /// Biased (generated) images; label 0.
    pub bias_path: PathBuf,
    /// ADM feature extractor (.pt / .safetensors).
    pub extractor: PathBuf,
    /// Output folder.
    pub savedir: PathBuf,
    /// Image resolution (must match the extractor and the data).
    pub img_resolution: usize,
    /// Number of iterations.
    pub iters: u64,
    /// Images per class per step (the step sees 2·batch_size).
    pub batch_size: usize,
    /// Rows per accumulation round on one rank (default: the rank's whole share of the
    /// 2·batch_size rows).
    pub batch_gpu: Option<usize>,
    /// Adam learning rate.
    pub lr: f64,
    /// L2 weight decay (added to the gradients).
    pub weight_decay: f64,
    /// How many times the reference set is repeated.
    pub real_mul: usize,
    /// Checkpoint / statistics period.
    pub save_every: u64,
    /// Device.
    pub device: Device,
    /// Seed of the init, the draws and the data order.
    pub seed: u64,
    /// Continue from `savedir/training-state.safetensors`.
    pub resume: bool,
    /// Start from this discriminator instead of a fresh init.
    pub init: Option<PathBuf>,
    /// Class-conditional discriminator (DG's `--cond 1`): labelled data, `label_emb`.
    pub cond: bool,
}

impl ClassifierOpts {
    /// The script's defaults for the given files.
    pub fn new(ref_path: PathBuf, bias_path: PathBuf, extractor: PathBuf, savedir: PathBuf) -> Self {
        ClassifierOpts {
            ref_path,
            bias_path,
            extractor,
            savedir,
            img_resolution: 32,
            iters: 20000,
            batch_size: 128,
            batch_gpu: None,
            lr: 3e-4,
            weight_decay: 1e-7,
            real_mul: 20,
            save_every: 500,
            device: Device::Cpu,
            seed: 0,
            resume: false,
            init: None,
            cond: false,
        }
    }
}

/// Progress of a run, reported after every iteration.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Iterations done (i + 1).
    pub done: u64,
    /// Total iterations.
    pub total: u64,
    /// This iteration's BCE.
    pub loss: f64,
    /// Running mean BCE since the last reset.
    pub mean_loss: f64,
    /// Running accuracy since the last reset.
    pub accuracy: f64,
    /// Checkpoint written after this iteration, if any.
    pub saved: Option<PathBuf>,
}

/// What a finished run leaves behind.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Checkpoints written by this invocation.
    pub checkpoints: Vec<PathBuf>,
    /// Iterations done in total.
    pub iterations: u64,
    /// The stop signal that ended the run early (the state is at `iterations`).
    pub stopped_by: Option<String>,
}

/// Seed of iteration `i`'s draws.
pub fn step_seed(seed: u64, i: u64) -> i64 {
    let mut r = SplitMix(seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03));
    (r.next_u64() >> 1) as i64
}

/// The discriminator configuration for an extractor: `load_discriminator(channel = feature
/// channels, condition 0)` on the extractor's feature map size.
pub fn discriminator_config(extractor: &EncoderConfig) -> EncoderConfig {
    discriminator_config_cond(extractor, false)
}

/// [`discriminator_config`] with DG's `condition` switch (conditional: a 1000-row
/// `label_emb`, as DG's `create_classifier` default).
pub fn discriminator_config_cond(extractor: &EncoderConfig, condition: bool) -> EncoderConfig {
    let mut c = EncoderConfig::discriminator(
        extractor.model_channels * extractor.channel_mult.last().copied().unwrap_or(1),
        condition,
    );
    c.image_size = extractor.image_size >> (extractor.channel_mult.len().saturating_sub(1));
    c
}

/// The discriminator's parameters (state_dict order) as a TensorStore of f32.
pub fn state_store(named: &[(String, Tensor)]) -> Result<tiw_converters::TensorStore> {
    crate::train::checkpoint::store_of(named.iter().map(|(n, t)| (n.as_str(), t)))
}

/// Batches of `batch` reference (label 1) + `batch` biased (label 0) images, shuffled.
pub struct Batches {
    real: ImageSet,
    fake: ImageSet,
    real_mul: usize,
    /// Sampler over the tiled reference set.
    pub real_sampler: EpochSampler,
    /// Sampler over the biased set.
    pub fake_sampler: EpochSampler,
    /// Generator of the in-batch permutation.
    pub mix: SplitMix,
    /// Classes of the conditional discriminator's `label_emb` (0: unconditional).
    pub num_class: usize,
}

impl Batches {
    /// `(x [2B, C, H, W] in [−1, 1], labels [2B])`: concat(ref, bias), then a random
    /// permutation of the 2B rows.
    pub fn next_batch(&mut self) -> Result<(Tensor, Tensor)> {
        let (x, labels, _) = self.next_batch_cond()?;
        Ok((x, labels))
    }

    /// [`Batches::next_batch`] plus, for a conditional discriminator (`num_class > 0`), the
    /// rows' classes one-hot `[2B, num_class]` (f32) in the same order.
    pub fn next_batch_cond(&mut self) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let ri = self.real_sampler.next_batch();
        let fi = self.fake_sampler.next_batch();
        let (c, h, w) = (self.real.c, self.real.h, self.real.w);
        let mut rows: Vec<(bool, usize)> = ri.iter().map(|&i| (true, i % self.real.n)).collect();
        rows.extend(fi.iter().map(|&i| (false, i)));
        let perm = self.mix.permutation(rows.len());
        let mut x = Vec::with_capacity(rows.len() * c * h * w);
        let mut labels = Vec::with_capacity(rows.len());
        let k = self.num_class;
        let mut onehot = vec![0f32; if k > 0 { rows.len() * k } else { 0 }];
        for (r, &p) in perm.iter().enumerate() {
            let (real, i) = rows[p];
            let set = if real { &self.real } else { &self.fake };
            set.push_chw(i, &mut x);
            labels.push(if real { 1f32 } else { 0.0 });
            if k > 0 {
                let class = set.labels.as_ref().map_or(0, |l| l[i]);
                onehot[r * k + class] = 1.0;
            }
        }
        let n = rows.len() as i64;
        let cond = if k > 0 {
            Some(Tensor::f_from_slice(&onehot)?.f_view([n, k as i64])?)
        } else {
            None
        };
        Ok((
            Tensor::f_from_slice(&x)?.f_view([n, c as i64, h as i64, w as i64])?,
            Tensor::f_from_slice(&labels)?,
            cond,
        ))
    }
    /// Number of tiled reference images.
    pub fn real_len(&self) -> usize {
        self.real.n * self.real_mul
    }
    /// Number of biased images.
    pub fn fake_sampler_len(&self) -> usize {
        self.fake.n
    }
}

fn check_images(set: &ImageSet, path: &Path, res: usize, channels: usize) -> Result<()> {
    if set.h != res || set.w != res || set.c != channels {
        bail!(
            "{}: images are {}×{}×{}; the extractor expects {res}×{res}×{channels} (--img-resolution {res})",
            path.display(),
            set.h,
            set.w,
            set.c
        );
    }
    Ok(())
}

/// Runs a training job in one process; `progress` is called after every iteration.
pub fn run(opts: &ClassifierOpts, progress: &mut dyn FnMut(&Progress)) -> Result<Summary> {
    run_on(opts, &Solo, progress)
}

/// [`run`] as one rank of `comm`: every rank assembles the same `2·batch_size` rows (same
/// samplers), keeps the rows at its positions (`≡ rank mod world`, draws keyed by position
/// as in [`crate::train::draws`]), and the gradients are summed over ranks, so the run
/// equals one process up to float summation order. Rank 0 writes checkpoints, statistics
/// and the state; `progress` reports the loss and accuracy over all ranks.
pub fn run_on(
    opts: &ClassifierOpts,
    comm: &dyn Collective,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary> {
    if opts.batch_size == 0 || opts.real_mul == 0 || opts.save_every == 0 {
        bail!("--batch-size, --real-mul and --save-every must be positive");
    }
    let global = 2 * opts.batch_size;
    let world = comm.world_size();
    if global % world != 0 {
        bail!("a step's {global} images (2 × --batch-size) do not split evenly over {world} ranks");
    }
    let rows_gpu = opts.batch_gpu.unwrap_or(global / world).min(global / world);
    let split = StepSplit::new(global, world, comm.rank(), rows_gpu)
        .context("--batch-gpu must divide the rank's share of the 2 × --batch-size rows")?;
    let writer = comm.rank() == 0;
    let dev = opts.device;
    let fo = TchOps::new(dev);
    let (extractor, real, fake) = open_inputs(opts, &fo)?;
    if writer {
        std::fs::create_dir_all(&opts.savedir)
            .with_context(|| format!("cannot create {}", opts.savedir.display()))?;
    }

    let want_cfg = discriminator_config_cond(&extractor.cfg, opts.cond);
    let state_path = opts.savedir.join(state::FILE);
    let resumed = if opts.resume {
        if !state_path.exists() {
            bail!("--resume: {} does not exist", state_path.display());
        }
        Some(state::TrainState::read(&state_path)?)
    } else {
        None
    };
    let to = TchOps::trainable(dev);
    let (w, disc) = discriminator(&to, opts, resumed.as_ref(), &want_cfg, &state_path)?;
    let num_class = disc.cfg.num_class.unwrap_or(0);
    check_classes(opts, &real, &fake, num_class)?;
    let named: Vec<(String, Tensor)> = w
        .named()?
        .into_iter()
        .filter(|(_, k, _)| *k == TensorKind::Param)
        .map(|(n, _, t)| (n, t.0))
        .collect();
    let params: Vec<Tensor> = named.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut adam = Adam::new(params.len(), opts.weight_decay);

    let mut batches = batches(opts, real, fake, num_class)?;
    let mut start = 0u64;
    let mut acc = state::Running::default();
    if let Some(st) = resumed {
        st.apply(&mut adam, &named, &mut batches, &mut acc, dev)?;
        start = st.meta.next_iter;
        check_resumed(&st.meta, opts, &state_path)?;
    }

    let nets = DiscNets {
        ops: fo,
        extractor: &extractor,
        disc: &disc,
    };
    if comm.world_size() > 1 {
        // every rank starts from rank 0's discriminator (fresh inits agree anyway)
        let all: Vec<&Tensor> = params.iter().collect();
        tch::no_grad(|| comm.broadcast(&all, 0))?;
    }
    let mut checkpoints = Vec::new();
    for i in start..opts.iters {
        let (x, labels, cond) = batches.next_batch_cond()?;
        let (x, labels) = (x.f_to_device(dev)?, labels.f_to_device(dev)?);
        let cond = cond.map(|c| c.f_to_device(dev)).transpose()?;
        let seed = step_seed(opts.seed, i);
        let out = step::train_step_on(
            &nets,
            &params,
            &mut adam,
            opts.lr,
            &x,
            &labels,
            cond.as_ref(),
            split,
            seed,
            comm,
        )?;
        let loss = out.loss;
        acc.add(loss, out.correct, out.seen);
        let mut saved = None;
        let report = (acc.mean_loss(), acc.accuracy());
        if i % opts.save_every == 0 {
            let path = opts.savedir.join(format!("discriminator_{}.pt", i + 1));
            if writer {
                tiw_converters::pt_write::write(&state_store(&named)?, &path, &|_| {})
                    .with_context(|| format!("writing {}", path.display()))?;
                state::append_stats(&opts.savedir, i + 1, &acc)?;
            }
            acc = state::Running::default();
            if writer {
                state::TrainState::write(&state_path, &named, &adam, &batches, &acc, i + 1, opts)?;
                checkpoints.push(path.clone());
                saved = Some(path);
            }
        }
        progress(&Progress {
            done: i + 1,
            total: opts.iters,
            loss,
            mean_loss: report.0,
            accuracy: report.1,
            saved,
        });
        if i + 1 < opts.iters {
            if let Some(sig) = stop_signal(comm)? {
                if writer {
                    state::TrainState::write(&state_path, &named, &adam, &batches, &acc, i + 1, opts)?;
                }
                return Ok(Summary {
                    checkpoints,
                    iterations: i + 1,
                    stopped_by: Some(sig),
                });
            }
        }
    }
    if start < opts.iters && writer {
        // the state after the last iteration, so that `--resume` with a larger --iter continues
        state::TrainState::write(&state_path, &named, &adam, &batches, &acc, opts.iters, opts)?;
    }
    Ok(Summary {
        checkpoints,
        iterations: opts.iters.max(start),
        stopped_by: None,
    })
}

/// The batch assembler: real rows (repeated `real_mul` times) and fake rows, each through
/// its own seeded epoch sampler, mixed by a third stream.
fn batches(opts: &ClassifierOpts, real: ImageSet, fake: ImageSet, num_class: usize) -> Result<Batches> {
    let real_n = real.n * opts.real_mul;
    Ok(Batches {
        real_sampler: EpochSampler::new(real_n, opts.batch_size, opts.seed ^ 0x5EED_0001)
            .with_context(|| format!("{} ×{}", opts.ref_path.display(), opts.real_mul))?,
        fake_sampler: EpochSampler::new(fake.n, opts.batch_size, opts.seed ^ 0x5EED_0002)
            .with_context(|| opts.bias_path.display().to_string())?,
        mix: SplitMix(opts.seed ^ 0x5EED_0003),
        real,
        fake,
        real_mul: opts.real_mul,
        num_class,
    })
}

/// A resumed state must come from a run with the same batch size, `real_mul` and seed.
fn check_resumed(meta: &state::Meta, opts: &ClassifierOpts, state_path: &std::path::Path) -> Result<()> {
    if meta.batch_size != opts.batch_size || meta.real_mul != opts.real_mul || meta.seed != opts.seed {
        bail!(
            "{}: saved with batch size {}, real_mul {}, seed {}; this run asks for {}, {}, {}",
            state_path.display(),
            meta.batch_size,
            meta.real_mul,
            meta.seed,
            opts.batch_size,
            opts.real_mul,
            opts.seed
        );
    }
    Ok(())
}

/// Whether a stop signal arrived at any rank (collective, once per iteration).
fn stop_signal(comm: &dyn Collective) -> Result<Option<String>> {
    let mine = crate::train::preempt::requested();
    if comm.world_size() == 1 {
        return Ok(mine);
    }
    let any = crate::train::parallel::any_rank(comm, mine.is_some())?;
    Ok(any.then(|| mine.unwrap_or_else(|| "a stop signal (at another rank)".into())))
}

/// Every class label of a conditional run fits the discriminator's `label_emb`.
fn check_classes(opts: &ClassifierOpts, real: &ImageSet, fake: &ImageSet, num_class: usize) -> Result<()> {
    if num_class == 0 {
        return Ok(());
    }
    for (set, path) in [(real, &opts.ref_path), (fake, &opts.bias_path)] {
        if let Some(m) = set.labels.as_ref().and_then(|l| l.iter().max()) {
            if *m >= num_class {
                bail!(
                    "{}: class {m} does not fit the discriminator's {num_class} classes",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// The extractor and both image sets, checked against `--img-resolution`.
fn open_inputs(opts: &ClassifierOpts, fo: &TchOps) -> Result<(EncoderUNet<TchOps>, ImageSet, ImageSet)> {
    for p in [&opts.ref_path, &opts.bias_path, &opts.extractor] {
        if !p.exists() {
            bail!("{}: no such file", p.display());
        }
    }
    let extractor = tiw_models::load::encoder(fo, &opts.extractor, None)?;
    if extractor.cfg.image_size != opts.img_resolution {
        bail!(
            "{}: the feature extractor is for {}×{} images, but --img-resolution is {}",
            opts.extractor.display(),
            extractor.cfg.image_size,
            extractor.cfg.image_size,
            opts.img_resolution
        );
    }
    let load = if opts.cond { load_labelled } else { load_images };
    let real = load(&opts.ref_path)?;
    let fake = load(&opts.bias_path)?;
    check_images(
        &real,
        &opts.ref_path,
        opts.img_resolution,
        extractor.cfg.in_channels,
    )?;
    check_images(
        &fake,
        &opts.bias_path,
        opts.img_resolution,
        extractor.cfg.in_channels,
    )?;
    Ok((extractor, real, fake))
}

/// The discriminator: from the state, from `--init`, or fresh.
fn discriminator<'o>(
    to: &'o TchOps,
    opts: &ClassifierOpts,
    resumed: Option<&state::TrainState>,
    want_cfg: &EncoderConfig,
    state_path: &Path,
) -> Result<(Weights<'o, TchOps>, EncoderUNet<TchOps>)> {
    Ok(match (resumed, &opts.init) {
        (Some(st), _) => {
            let w = Weights::from_store(to, &st.weights)?;
            let d = build(&w, &st.weights, want_cfg, state_path, opts.cond)?;
            (w, d)
        }
        (None, Some(p)) => {
            let (store, _) = tiw_models::load::read(p)?;
            let w = Weights::from_store(to, &store)?;
            let d = build(&w, &store, want_cfg, p, opts.cond)?;
            (w, d)
        }
        (None, None) => {
            let w = Weights::init(to, opts.seed);
            let d = EncoderUNet::new(&w.root(), want_cfg)?;
            (w, d)
        }
    })
}

fn build(
    w: &Weights<TchOps>,
    store: &tiw_converters::TensorStore,
    want: &EncoderConfig,
    path: &Path,
    cond: bool,
) -> Result<EncoderUNet<TchOps>> {
    let cfg = EncoderConfig::infer(&|n| store.get(n).map(|e| e.shape.clone()), None)
        .with_context(|| format!("{}: not an ADM discriminator", path.display()))?;
    match (cfg.num_class, cond) {
        (Some(k), false) => bail!(
            "{}: a class-conditional discriminator (label_emb of {k} classes); train it with --cond 1",
            path.display()
        ),
        (None, true) => bail!(
            "{}: an unconditional discriminator (no label_emb); --cond 1 needs a conditional one",
            path.display()
        ),
        _ => {}
    }
    if cfg.in_channels != want.in_channels || cfg.image_size != want.image_size || cfg.out_channels != 1 {
        bail!(
            "{}: discriminator takes {}×{}×{} features with {} outputs; the extractor gives {}×{}×{} (1 output needed)",
            path.display(),
            cfg.in_channels,
            cfg.image_size,
            cfg.image_size,
            cfg.out_channels,
            want.in_channels,
            want.image_size,
            want.image_size
        );
    }
    let d = EncoderUNet::new(&w.root(), &cfg).with_context(|| path.display().to_string())?;
    w.check_all_used().with_context(|| path.display().to_string())?;
    Ok(d)
}
