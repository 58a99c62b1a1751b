//! Where a training run comes from and what it records: the resume source (our training
//! state, a run directory, or the official `.pt` + `.pkl` pair) and `training_options.json`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Device;
use tiw_converters::Json;

use super::checkpoint::{self, State};
use super::options::TrainOptions;
use super::score::TrainData;

/// Where a run continues from: the loaded state, the run directory to continue in, and a
/// line for the log saying which state was taken (or why none was).
pub struct Resumed {
    /// The training state, if any.
    pub state: Option<State>,
    /// The run directory to continue in (a directory `--resume`, or `--resume auto`'s find).
    pub dir: Option<PathBuf>,
    /// What `--resume auto` decided.
    pub note: Option<String>,
}

/// The state `opts.resume` names (or `--resume auto` finds, runs described by `desc`).
pub fn load_resume(opts: &TrainOptions, desc: &str, device: Device) -> Result<Resumed> {
    let plain = |state, dir| Resumed {
        state,
        dir,
        note: None,
    };
    if opts.resume_auto {
        return Ok(match auto_resume_source(opts, desc)? {
            Some((dir, path)) => Resumed {
                state: Some(checkpoint::read_state(&path, device)?),
                dir: Some(dir),
                note: Some(format!("--resume auto: continuing from {}", path.display())),
            },
            None => Resumed {
                state: None,
                dir: None,
                note: Some(format!(
                    "--resume auto: no readable training state of a run {desc} in {}; starting fresh",
                    opts.run_dir.as_ref().unwrap_or(&opts.outdir).display()
                )),
            },
        });
    }
    match &opts.resume {
        None => Ok(plain(None, None)),
        Some(p) if p.is_dir() => {
            let s = checkpoint::latest_state(p)?.with_context(|| {
                format!(
                    "--resume {}: no training-state-*.safetensors in this folder",
                    p.display()
                )
            })?;
            Ok(plain(Some(checkpoint::read_state(&s, device)?), Some(p.clone())))
        }
        Some(p) if p.extension().is_some_and(|e| e == "pt") => {
            let pkl = official_snapshot_for(p)?;
            let mut s = checkpoint::read_official_state(p, &pkl, device)?;
            // the official state records no seed: continue with this run's
            s.progress.seed = opts.seed;
            Ok(plain(Some(s), None))
        }
        Some(p) => Ok(plain(Some(checkpoint::read_state(p, device)?), None)),
    }
}

/// `--resume auto`: the newest run directory `<outdir>/<NNNNN>-<desc>` (highest NNNNN; with
/// `--run-dir`, that directory alone) holding a readable training state, and its newest
/// readable state.
pub fn auto_resume_source(opts: &TrainOptions, desc: &str) -> Result<Option<(PathBuf, PathBuf)>> {
    let mut dirs: Vec<(u64, PathBuf)> = Vec::new();
    if let Some(d) = &opts.run_dir {
        dirs.push((0, d.clone()));
    } else if opts.outdir.is_dir() {
        let listing =
            std::fs::read_dir(&opts.outdir).with_context(|| format!("listing {}", opts.outdir.display()))?;
        for e in listing.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
            let matches = !digits.is_empty() && name[digits.len()..] == format!("-{desc}");
            if let (true, Ok(n)) = (matches, digits.parse::<u64>()) {
                dirs.push((n, e.path()));
            }
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (_, dir) in dirs {
        for state in checkpoint::states_newest_first(&dir)? {
            if checkpoint::state_is_readable(&state) {
                return Ok(Some((dir, state)));
            }
        }
    }
    Ok(None)
}

/// The official snapshot matching `training-state-<kimg>.pt`: `network-snapshot-<kimg>.pkl`
/// in the same folder.
pub fn official_snapshot_for(pt: &Path) -> Result<PathBuf> {
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
pub fn training_options_json(
    opts: &TrainOptions,
    config: &Json,
    data: &dyn TrainData,
    label_dim: usize,
    world: usize,
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
        (
            "batch_gpu".into(),
            Json::Int(opts.batch_gpu_for(world).unwrap_or(0) as i64),
        ),
        ("loss_scaling".into(), Json::Float(opts.loss_scaling)),
        ("cudnn_benchmark".into(), Json::Bool(opts.cudnn_benchmark)),
        ("allow_tf32".into(), Json::Bool(opts.tf32)),
        ("kimg_per_tick".into(), Json::Float(opts.tick_kimg)),
        ("snapshot_ticks".into(), Json::Int(opts.snap as i64)),
        ("state_dump_ticks".into(), Json::Int(opts.dump as i64)),
        ("seed".into(), Json::Int(opts.seed as i64)),
        ("label_dim".into(), Json::Int(label_dim as i64)),
        ("cla_path".into(), path(&opts.extractor)),
        ("dis_path".into(), path(&opts.discriminator)),
        (
            "resume".into(),
            if opts.resume_auto {
                Json::Str("auto".into())
            } else {
                path(&opts.resume)
            },
        ),
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
        ("world_size".into(), Json::Int(world as i64)),
        (
            "sampler_split".into(),
            tiw(clap::ValueEnum::to_possible_value(&opts.sampler_split)),
        ),
    ]);
    Json::Object(o).to_text_pretty()
}
