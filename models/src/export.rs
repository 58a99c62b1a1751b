//! ONNX export of the networks from the same forward code that runs in libtorch.
//!
//! | graph | inputs | output |
//! |---|---|---|
//! | `denoiser` | `x [N,C,R,R]`, `sigma [N]`, `class_labels [N,L]` (L > 0), `augment_labels [N,A]` (A > 0) | `D [N,C,R,R]` |
//! | `extractor` | `x [N,3,R,R]`, `t [N]` | `features [N,512,S,S]` |
//! | `discriminator` | `features [N,C,S,S]`, `t [N]`, `condition [N,K]` (conditional) | `logits [N,1]` |
//! | `discriminator-pipeline` | `x_vp [N,3,R,R]`, `t [N]` (+ `condition`) | `prediction [N]` = sigmoid(disc(extractor(x_vp, t), t)) |
//!
//! The batch dimension is the symbol `N`. `metadata_props` carries `tiw.kind`, `tiw.config`
//! (JSON), for denoisers `tiw.precision` (`fp32` / `fp16`, see [`Precision`]) and whatever
//! the caller adds (source file, sha256).

use crate::onnx_model::OnnxModel;
use tiw_converters::{Json, TensorStore};

use crate::adm::{EncoderConfig, EncoderUNet};
use crate::config::{NetConfig, Precond};
use crate::edm::EdmDenoiser;
use crate::onnx_ops::{Dim, OnnxOps};
use crate::vb::Weights;
use crate::Result;

/// Which graph to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Graph {
    /// Preconditioned EDM denoiser.
    Denoiser,
    /// ADM feature extractor (features).
    Extractor,
    /// Discriminator on features (logits).
    Discriminator,
    /// `d(x_vp, t)` end to end.
    DiscriminatorPipeline,
}

impl Graph {
    /// Name used on the command line and in metadata.
    pub fn name(self) -> &'static str {
        match self {
            Graph::Denoiser => "denoiser",
            Graph::Extractor => "extractor",
            Graph::Discriminator => "discriminator",
            Graph::DiscriminatorPipeline => "discriminator-pipeline",
        }
    }
}

fn n() -> Dim {
    Dim::Sym("N".into())
}
fn f(x: usize) -> Dim {
    Dim::Fixed(x as i64)
}

/// JSON summary of a denoiser configuration for `metadata_props`.
pub fn denoiser_metadata(cfg: &NetConfig, full: Option<&Json>) -> Json {
    let (kind, smin, smax, sdata) = match cfg.precond {
        Precond::Edm { sigma_data, .. } => (
            "edm",
            cfg.precond.sigma_min(),
            cfg.precond.sigma_max(),
            sigma_data,
        ),
        Precond::Vp { .. } => ("vp", cfg.precond.sigma_min(), cfg.precond.sigma_max(), 0.5),
        Precond::Ve { .. } => ("ve", cfg.precond.sigma_min(), cfg.precond.sigma_max(), 0.5),
        Precond::IDdpm { .. } => ("iddpm", cfg.precond.sigma_min(), cfg.precond.sigma_max(), 0.5),
    };
    let mut m = vec![
        ("precond".to_string(), Json::Str(kind.into())),
        ("sigma_min".into(), Json::Float(smin)),
        ("sigma_max".into(), Json::Float(smax)),
        ("sigma_data".into(), Json::Float(sdata)),
        ("img_resolution".into(), Json::Int(cfg.img_resolution as i64)),
        ("img_channels".into(), Json::Int(cfg.img_channels as i64)),
        ("label_dim".into(), Json::Int(cfg.label_dim as i64)),
        ("augment_dim".into(), Json::Int(cfg.augment_dim() as i64)),
    ];
    if let Some(c) = full {
        m.push(("network".into(), c.clone()));
    }
    Json::Object(m)
}

/// Numeric precision of an exported graph (metadata `tiw.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 everywhere.
    #[default]
    Fp32,
    /// f16 weights and compute inside the inner network, as EDMPrecond with
    /// `use_fp16=True` on CUDA; f32 inputs and outputs, preconditioning, noise/label
    /// embedding, GroupNorm statistics and affine, attention logits and softmax.
    Fp16,
}

impl Precision {
    /// `fp32` / `fp16` (the `--precision` values and the metadata value).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
        }
    }
}

/// Exports an EDM denoiser in f32 ([`denoiser_with_precision`] with [`Precision::Fp32`]).
pub fn denoiser(
    store: &TensorStore,
    cfg: &NetConfig,
    full_config: Option<&Json>,
    opset: i64,
    extra_meta: &[(String, String)],
) -> Result<OnnxModel> {
    denoiser_with_precision(store, cfg, full_config, opset, Precision::Fp32, extra_meta)
}

/// Exports an EDM denoiser at `precision`; `metadata_props` carry `tiw.precision`.
pub fn denoiser_with_precision(
    store: &TensorStore,
    cfg: &NetConfig,
    full_config: Option<&Json>,
    opset: i64,
    precision: Precision,
    extra_meta: &[(String, String)],
) -> Result<OnnxModel> {
    let o = OnnxOps::new(opset)?;
    let w = Weights::from_store(&o, store)?;
    let mut net = EdmDenoiser::new(&w.root(), cfg)?;
    net.set_fp16(precision == Precision::Fp16);
    w.check_all_used()?;
    let (c, r) = (cfg.img_channels, cfg.img_resolution);
    let x = o.input("x", &[n(), f(c), f(r), f(r)]);
    let sigma = o.input("sigma", &[n()]);
    let labels = (cfg.label_dim > 0).then(|| o.input("class_labels", &[n(), f(cfg.label_dim)]));
    let aug = (cfg.augment_dim() > 0).then(|| o.input("augment_labels", &[n(), f(cfg.augment_dim())]));
    let out = net.forward(&o, &x, &sigma, labels.as_ref(), aug.as_ref(), false)?;
    let mut meta = vec![
        ("tiw.kind".to_string(), Graph::Denoiser.name().to_string()),
        (
            "tiw.config".to_string(),
            denoiser_metadata(cfg, full_config).to_text(),
        ),
        ("tiw.precision".to_string(), precision.name().to_string()),
    ];
    meta.extend_from_slice(extra_meta);
    Ok(o.finish(&[("D", &out.d, vec![n(), f(c), f(r), f(r)])], &meta))
}

fn encoder_meta(cfg: &EncoderConfig, g: Graph) -> Json {
    Json::Object(vec![
        ("graph".into(), Json::Str(g.name().into())),
        ("image_size".into(), Json::Int(cfg.image_size as i64)),
        ("in_channels".into(), Json::Int(cfg.in_channels as i64)),
        ("model_channels".into(), Json::Int(cfg.model_channels as i64)),
        (
            "channel_mult".into(),
            Json::Array(cfg.channel_mult.iter().map(|&m| Json::Int(m as i64)).collect()),
        ),
        ("num_res_blocks".into(), Json::Int(cfg.num_res_blocks as i64)),
        ("out_channels".into(), Json::Int(cfg.out_channels as i64)),
        (
            "num_class".into(),
            cfg.num_class.map(|c| Json::Int(c as i64)).unwrap_or(Json::Null),
        ),
    ])
}

fn feature_size(cfg: &EncoderConfig) -> usize {
    cfg.image_size >> (cfg.channel_mult.len() - 1)
}

fn feature_channels(cfg: &EncoderConfig) -> usize {
    cfg.model_channels * cfg.channel_mult.last().copied().unwrap_or(1)
}

/// Exports the feature extractor (`x`, `t` → `features`).
pub fn extractor(
    store: &TensorStore,
    image_size: Option<usize>,
    opset: i64,
    extra_meta: &[(String, String)],
) -> Result<OnnxModel> {
    let o = OnnxOps::new(opset)?;
    let cfg = EncoderConfig::infer(&|k| store.get(k).map(|e| e.shape.clone()), image_size)?;
    let w = Weights::from_store(&o, store)?;
    let fe = EncoderUNet::new(&w.root(), &cfg)?;
    w.check_all_used()?;
    let x = o.input(
        "x",
        &[n(), f(cfg.in_channels), f(cfg.image_size), f(cfg.image_size)],
    );
    let t = o.input("t", &[n()]);
    let out = fe.forward(&o, &x, &t, None, false)?;
    let s = feature_size(&cfg);
    let mut meta = vec![
        ("tiw.kind".to_string(), Graph::Extractor.name().to_string()),
        (
            "tiw.config".to_string(),
            encoder_meta(&cfg, Graph::Extractor).to_text(),
        ),
    ];
    meta.extend_from_slice(extra_meta);
    Ok(o.finish(
        &[(
            "features",
            &out.features,
            vec![n(), f(feature_channels(&cfg)), f(s), f(s)],
        )],
        &meta,
    ))
}

/// Exports the discriminator (`features`, `t` [, `condition`] → `logits`).
pub fn discriminator(store: &TensorStore, opset: i64, extra_meta: &[(String, String)]) -> Result<OnnxModel> {
    let o = OnnxOps::new(opset)?;
    let cfg = EncoderConfig::infer(&|k| store.get(k).map(|e| e.shape.clone()), None)?;
    let w = Weights::from_store(&o, store)?;
    let dis = EncoderUNet::new(&w.root(), &cfg)?;
    w.check_all_used()?;
    let x = o.input(
        "features",
        &[n(), f(cfg.in_channels), f(cfg.image_size), f(cfg.image_size)],
    );
    let t = o.input("t", &[n()]);
    let c = cfg.num_class.map(|k| o.input("condition", &[n(), f(k)]));
    let out = dis.forward(&o, &x, &t, c.as_ref(), true)?;
    let mut meta = vec![
        ("tiw.kind".to_string(), Graph::Discriminator.name().to_string()),
        (
            "tiw.config".to_string(),
            encoder_meta(&cfg, Graph::Discriminator).to_text(),
        ),
    ];
    meta.extend_from_slice(extra_meta);
    Ok(o.finish(
        &[(
            "logits",
            &out.logits.expect("head"),
            vec![n(), f(cfg.out_channels)],
        )],
        &meta,
    ))
}

/// Exports `d(x_vp, t) = sigmoid(disc(extractor(x_vp, t), t))` as one graph. Initializer
/// names are prefixed `extractor.` / `discriminator.`.
pub fn discriminator_pipeline(
    fe_store: &TensorStore,
    dis_store: &TensorStore,
    image_size: Option<usize>,
    opset: i64,
    extra_meta: &[(String, String)],
) -> Result<OnnxModel> {
    let o = OnnxOps::new(opset)?;
    let fcfg = EncoderConfig::infer(&|k| fe_store.get(k).map(|e| e.shape.clone()), image_size)?;
    let dcfg = EncoderConfig::infer(&|k| dis_store.get(k).map(|e| e.shape.clone()), None)?;
    let prefixed = |s: &TensorStore, p: &str| s.filter_map(|e| Some(format!("{p}.{}", e.name)));
    let (fs, ds) = (
        prefixed(fe_store, "extractor")?,
        prefixed(dis_store, "discriminator")?,
    );
    let wf = Weights::from_store(&o, &fs)?;
    let fe = EncoderUNet::new(&wf.root().pp("extractor"), &fcfg)?;
    wf.check_all_used()?;
    let wd = Weights::from_store(&o, &ds)?;
    let dis = EncoderUNet::new(&wd.root().pp("discriminator"), &dcfg)?;
    wd.check_all_used()?;
    use crate::backend::Ops;
    let x = o.input(
        "x_vp",
        &[n(), f(fcfg.in_channels), f(fcfg.image_size), f(fcfg.image_size)],
    );
    let t = o.input("t", &[n()]);
    let c = dcfg.num_class.map(|k| o.input("condition", &[n(), f(k)]));
    let feats = fe.forward(&o, &x, &t, None, false)?.features;
    let logits = dis
        .forward(&o, &feats, &t, c.as_ref(), true)?
        .logits
        .expect("head");
    let p = o.reshape(&o.sigmoid(&logits)?, &[-1])?;
    let mut meta = vec![
        (
            "tiw.kind".to_string(),
            Graph::DiscriminatorPipeline.name().to_string(),
        ),
        (
            "tiw.config".to_string(),
            Json::Object(vec![
                ("extractor".into(), encoder_meta(&fcfg, Graph::Extractor)),
                ("discriminator".into(), encoder_meta(&dcfg, Graph::Discriminator)),
            ])
            .to_text(),
        ),
    ];
    meta.extend_from_slice(extra_meta);
    Ok(o.finish(&[("prediction", &p, vec![n()])], &meta))
}
