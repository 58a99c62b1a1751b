//! Options of score-model training (`tiw train`) and the network/loss configuration they
//! imply, built the way EDM's `train.py` builds them (SPEC §5.2).

use std::path::PathBuf;

use anyhow::{bail, Result};
use tiw_converters::Json;

use super::loss::{Loss, TiwCorrection, TiwWeighting};

/// `--precond`: preconditioning and loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecondChoice {
    /// EDMPrecond + TIW_EDMLoss (TIW-DSM; needs `--extractor` and `--discriminator`).
    #[value(name = "tiw_edm")]
    TiwEdm,
    /// EDMPrecond + EDMLoss (plain denoising score matching).
    Edm,
    /// VPPrecond + VPLoss.
    Vp,
    /// VEPrecond + VELoss.
    Ve,
}

impl PrecondChoice {
    /// The name train.py uses in run directories.
    pub fn name(self) -> &'static str {
        match self {
            PrecondChoice::TiwEdm => "tiw_edm",
            PrecondChoice::Edm => "edm",
            PrecondChoice::Vp => "vp",
            PrecondChoice::Ve => "ve",
        }
    }
}

/// `--arch`: network preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchChoice {
    /// DDPM++ (SongUNet, positional embedding, standard encoder/decoder, filter [1,1]).
    Ddpmpp,
    /// NCSN++ (SongUNet, Fourier embedding, residual encoder, filter [1,3,3,1]).
    Ncsnpp,
    /// ADM (DhariwalUNet).
    Adm,
}

impl ArchChoice {
    /// The name train.py uses in run directories.
    pub fn name(self) -> &'static str {
        match self {
            ArchChoice::Ddpmpp => "ddpmpp",
            ArchChoice::Ncsnpp => "ncsnpp",
            ArchChoice::Adm => "adm",
        }
    }
}

/// `--tiw-mode`: both TIW switches at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TiwMode {
    /// Official weighting and correction (the published code).
    Official,
    /// Per-sample weighting and the derived correction.
    Corrected,
}

impl TiwMode {
    /// (weighting, correction) of the mode.
    pub fn switches(self) -> (TiwWeighting, TiwCorrection) {
        match self {
            TiwMode::Official => (TiwWeighting::Official, TiwCorrection::Official),
            TiwMode::Corrected => (TiwWeighting::PerSample, TiwCorrection::Derived),
        }
    }
}

/// How ranks share the dataset stream of EDM's `InfiniteSampler` (see
/// [`crate::train::draws`] for the matching positions of the random draws).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SamplerSplit {
    /// One stream for all ranks, rank `k` taking the `k`-th contiguous block of every step:
    /// the data order, the draws and the samples that share a network call are those of one
    /// process with the same `--batch-gpu`, on any world size (a state resumes exactly on
    /// any world size).
    #[default]
    Global,
    /// The official sampler: each rank runs its own copy of the stream and takes the
    /// positions `≡ k (mod N)`; its window shuffles happen at its own positions only, so the
    /// data order depends on the world size.
    Rank,
}

/// Everything a training run needs (CLI flags of `tiw train`, defaults as train.py).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Dataset: EDM dataset.zip or image folder.
    pub data: PathBuf,
    /// Parent folder of the run directory.
    pub outdir: PathBuf,
    /// Use exactly this run directory instead of `<outdir>/<NNNNN>-<desc>`.
    pub run_dir: Option<PathBuf>,
    /// Class-conditional training (labels from dataset.json).
    pub cond: bool,
    /// Network preset.
    pub arch: ArchChoice,
    /// Preconditioning and loss.
    pub precond: PrecondChoice,
    /// Total training duration in Mimg.
    pub duration_mimg: f64,
    /// Total batch size.
    pub batch: usize,
    /// Limit per accumulation round.
    pub batch_gpu: Option<usize>,
    /// Channel multiplier (model_channels).
    pub cbase: Option<usize>,
    /// Channels per resolution (channel_mult).
    pub cres: Option<Vec<usize>>,
    /// Residual blocks per resolution (extension; train.py keeps the architecture default).
    pub num_blocks: Option<usize>,
    /// Resolutions with self-attention (extension; SongUNet default [16]).
    pub attn: Option<Vec<usize>>,
    /// Learning rate.
    pub lr: f64,
    /// Learning-rate ramp-up in kimg (fixed at 10000 in the official loop).
    pub lr_rampup_kimg: f64,
    /// EMA half-life in Mimg.
    pub ema_mimg: f64,
    /// EMA ramp-up ratio (`None` = off; 0.05 in the official loop, off with `--transfer`).
    pub ema_rampup: Option<f64>,
    /// Dropout probability.
    pub dropout: f64,
    /// train.py's `--fp16`: the network's `use_fp16` (f16 compute on CUDA; the CPU runs f32,
    /// as the official code does).
    pub fp16: bool,
    /// train.py's `--ls`: the loss is multiplied by this before the backward pass.
    pub loss_scaling: f64,
    /// train.py's `--bench`: cuDNN benchmark mode (CUDA).
    pub cudnn_benchmark: bool,
    /// Extension: allow TF32 in cuDNN convolutions (the official loop switches it off).
    pub tf32: bool,
    /// Augment probability (0 = off).
    pub augment: f64,
    /// Dataset x-flips.
    pub xflip: bool,
    /// TIW: feature extractor.
    pub extractor: Option<PathBuf>,
    /// TIW: discriminator.
    pub discriminator: Option<PathBuf>,
    /// TIW weighting switch.
    pub tiw_weighting: TiwWeighting,
    /// TIW correction switch.
    pub tiw_correction: TiwCorrection,
    /// Progress print interval in kimg.
    pub tick_kimg: f64,
    /// Snapshot interval in ticks (0 = only at the end).
    pub snap: u64,
    /// Training-state interval in ticks (0 = only at the end).
    pub dump: u64,
    /// Random seed (network init, data order, draws).
    pub seed: u64,
    /// Resume from a training state (ours, or the official `.pt` + its snapshot `.pkl`).
    pub resume: Option<PathBuf>,
    /// `--resume auto`: continue the newest run of these options in `outdir` (or
    /// `run_dir`) that has a readable training state, or start fresh.
    pub resume_auto: bool,
    /// Start from these network weights (EMA ramp-up off, as train.py's `--transfer`).
    pub transfer: Option<PathBuf>,
    /// String to append to the run directory name.
    pub desc: Option<String>,
    /// Also write snapshots as `.pt` state_dicts.
    pub save_pt: bool,
    /// Stop after this many images even if the duration is longer (kimg; for tests and
    /// interrupted runs — a resumed run continues to `duration_mimg`).
    pub stop_kimg: Option<f64>,
    /// Show a progress bar.
    pub progress: bool,
    /// How the data stream is split over ranks.
    pub sampler_split: SamplerSplit,
    /// Memory limit in GB for the memory guard (replaces the detected limit).
    pub max_memory_gb: Option<f64>,
}

impl TrainOptions {
    /// train.py's defaults for the given data and output folder.
    pub fn new(data: PathBuf, outdir: PathBuf) -> Self {
        TrainOptions {
            data,
            outdir,
            run_dir: None,
            cond: false,
            arch: ArchChoice::Ddpmpp,
            precond: PrecondChoice::TiwEdm,
            duration_mimg: 200.0,
            batch: 512,
            batch_gpu: None,
            cbase: None,
            cres: None,
            num_blocks: None,
            attn: None,
            lr: 1e-3,
            lr_rampup_kimg: 10_000.0,
            ema_mimg: 0.5,
            ema_rampup: Some(0.05),
            dropout: 0.13,
            augment: 0.12,
            xflip: false,
            extractor: None,
            discriminator: None,
            tiw_weighting: TiwWeighting::Official,
            tiw_correction: TiwCorrection::Official,
            tick_kimg: 50.0,
            snap: 50,
            dump: 500,
            seed: 0,
            resume: None,
            resume_auto: false,
            transfer: None,
            desc: None,
            save_pt: false,
            stop_kimg: None,
            progress: true,
            sampler_split: SamplerSplit::Global,
            fp16: false,
            loss_scaling: 1.0,
            cudnn_benchmark: true,
            tf32: false,
            max_memory_gb: None,
        }
    }

    /// Checks the combination of options (clear messages instead of failures mid-run).
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            bail!("--batch must be positive");
        }
        if let Some(b) = self.batch_gpu {
            if b == 0 {
                bail!("--batch-gpu must be positive");
            }
        }
        let bg = self.batch_gpu().min(self.batch);
        if self.batch % bg != 0 {
            bail!(
                "--batch {} is not a multiple of the per-round batch {bg} (--batch-gpu)",
                self.batch
            );
        }
        if self.duration_mimg.is_nan() || self.duration_mimg <= 0.0 {
            bail!("--duration must be positive");
        }
        if !self.lr.is_finite() || self.lr < 0.0 {
            bail!("--lr must be a finite non-negative number");
        }
        if !(0.0..=1.0).contains(&self.augment) {
            bail!("--augment must be in [0, 1]");
        }
        if !(self.loss_scaling.is_finite() && self.loss_scaling > 0.0) {
            bail!("--ls must be a positive number");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("--dropout must be in [0, 1)");
        }
        if self.tick_kimg.is_nan() || self.tick_kimg <= 0.0 {
            bail!("--tick must be positive");
        }
        if self.precond == PrecondChoice::TiwEdm {
            if self.extractor.is_none() || self.discriminator.is_none() {
                bail!("--precond tiw_edm needs --extractor FE.pt and --discriminator DIS.pt (the official defaults are absolute author paths)");
            }
        } else if self.extractor.is_some() || self.discriminator.is_some() {
            bail!("--extractor/--discriminator are only used with --precond tiw_edm");
        }
        if self.max_memory_gb.is_some_and(|g| !g.is_finite() || g <= 0.0) {
            bail!("--max-memory must be a positive number of GB");
        }
        if (self.resume.is_some() || self.resume_auto) && self.transfer.is_some() {
            bail!("--resume and --transfer exclude each other");
        }
        Ok(())
    }

    /// Per-round batch of one rank among `world` (train.py: `min(batch_gpu, batch / world)`;
    /// the rank's whole share if unset). Errors when the batch does not split evenly.
    pub fn batch_gpu_for(&self, world: usize) -> Result<usize> {
        if world == 0 || self.batch % world != 0 {
            bail!(
                "--batch {} is not divisible by the world size {world} (the number of ranks)",
                self.batch
            );
        }
        let share = self.batch / world;
        let bg = self.batch_gpu.unwrap_or(share).min(share);
        if share % bg != 0 {
            bail!(
                "--batch {} over {world} rank(s) is {share} per rank, not a multiple of --batch-gpu {bg}",
                self.batch
            );
        }
        Ok(bg)
    }

    /// Per-round batch (train.py: `min(batch_gpu, batch)`; the whole batch if unset).
    pub fn batch_gpu(&self) -> usize {
        self.batch_gpu.unwrap_or(self.batch).min(self.batch)
    }

    /// `total_kimg = max(int(duration·1000), 1)` as train.py computes it (for the record).
    pub fn total_kimg(&self) -> u64 {
        ((self.duration_mimg * 1000.0) as u64).max(1)
    }

    /// Images to train on: `duration·10⁶`, at least one batch. Unlike train.py, which
    /// truncates to whole kimg, a fractional kimg duration is honoured (short test runs).
    pub fn total_nimg(&self) -> u64 {
        ((self.duration_mimg * 1e6).round() as u64).max(self.batch as u64)
    }

    /// The loss.
    pub fn loss(&self) -> Loss {
        match self.precond {
            PrecondChoice::TiwEdm => Loss::tiw(self.tiw_weighting, self.tiw_correction),
            PrecondChoice::Edm => Loss::edm(),
            PrecondChoice::Vp => Loss::Vp {
                beta_d: 19.9,
                beta_min: 0.1,
                epsilon_t: 1e-5,
            },
            PrecondChoice::Ve => Loss::Ve {
                sigma_min: 0.02,
                sigma_max: 100.0,
            },
        }
    }

    /// train.py's `network_kwargs` for this run (class name, preset, overrides, dropout,
    /// `augment_dim` 9 when augmenting).
    pub fn network_kwargs(&self) -> Json {
        let s = |v: &str| Json::Str(v.into());
        let i = |v: usize| Json::Int(v as i64);
        let list = |v: &[usize]| Json::Array(v.iter().map(|&x| Json::Int(x as i64)).collect());
        let mut kw: Vec<(String, Json)> = Vec::new();
        let mut put = |k: &str, v: Json| kw.push((k.to_string(), v));
        match self.arch {
            ArchChoice::Ddpmpp => {
                put("model_type", s("SongUNet"));
                put("embedding_type", s("positional"));
                put("encoder_type", s("standard"));
                put("decoder_type", s("standard"));
                put("channel_mult_noise", i(1));
                put("resample_filter", list(&[1, 1]));
                put("model_channels", i(self.cbase.unwrap_or(128)));
                put("channel_mult", list(self.cres.as_deref().unwrap_or(&[2, 2, 2])));
            }
            ArchChoice::Ncsnpp => {
                put("model_type", s("SongUNet"));
                put("embedding_type", s("fourier"));
                put("encoder_type", s("residual"));
                put("decoder_type", s("standard"));
                put("channel_mult_noise", i(2));
                put("resample_filter", list(&[1, 3, 3, 1]));
                put("model_channels", i(self.cbase.unwrap_or(128)));
                put("channel_mult", list(self.cres.as_deref().unwrap_or(&[2, 2, 2])));
            }
            ArchChoice::Adm => {
                put("model_type", s("DhariwalUNet"));
                put("model_channels", i(self.cbase.unwrap_or(192)));
                put(
                    "channel_mult",
                    list(self.cres.as_deref().unwrap_or(&[1, 2, 3, 4])),
                );
            }
        }
        if let Some(n) = self.num_blocks {
            put("num_blocks", i(n));
        }
        if let Some(a) = &self.attn {
            put("attn_resolutions", list(a));
        }
        let class = match self.precond {
            PrecondChoice::TiwEdm | PrecondChoice::Edm => "training.networks.EDMPrecond",
            PrecondChoice::Vp => "training.networks.VPPrecond",
            PrecondChoice::Ve => "training.networks.VEPrecond",
        };
        put("class_name", s(class));
        if self.augment > 0.0 {
            put("augment_dim", i(9));
        }
        put("dropout", Json::Float(self.dropout));
        put("use_fp16", Json::Bool(self.fp16));
        Json::Object(kw)
    }

    /// The network configuration in the layout `tiw_models::config::NetConfig::from_json`
    /// reads (`network_kwargs` + `interface_kwargs`), stored in snapshots and states.
    pub fn network_config(&self, resolution: usize, channels: usize, label_dim: usize) -> Json {
        Json::Object(vec![
            ("network_kwargs".into(), self.network_kwargs()),
            (
                "interface_kwargs".into(),
                Json::Object(vec![
                    ("img_resolution".into(), Json::Int(resolution as i64)),
                    ("img_channels".into(), Json::Int(channels as i64)),
                    ("label_dim".into(), Json::Int(label_dim as i64)),
                ]),
            ),
        ])
    }

    /// train.py's run-directory description:
    /// `<dataset>-<cond|uncond>-<arch>-<precond>-gpus<N>-batch<B>-<fp16|fp32>[-desc]` for `world`
    /// ranks.
    pub fn run_desc(&self, dataset_name: &str, world: usize) -> String {
        let mut d = format!(
            "{dataset_name}-{}-{}-{}-gpus{world}-batch{}-{}",
            if self.cond { "cond" } else { "uncond" },
            self.arch.name(),
            self.precond.name(),
            self.batch,
            if self.fp16 { "fp16" } else { "fp32" }
        );
        if let Some(x) = &self.desc {
            d.push('-');
            d.push_str(x);
        }
        d
    }
}

/// Next free run directory `<outdir>/<NNNNN>-<desc>`, NNNNN = 1 + the largest numeric
/// prefix among existing entries (train.py's rule; 00000 in an empty folder).
pub fn next_run_dir(outdir: &std::path::Path, desc: &str) -> Result<PathBuf> {
    let mut next = 0u64;
    if outdir.is_dir() {
        for e in std::fs::read_dir(outdir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(n) = digits.parse::<u64>() {
                next = next.max(n + 1);
            }
        }
    }
    Ok(outdir.join(format!("{next:05}-{desc}")))
}
