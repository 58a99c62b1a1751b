//! Typed configurations, built from the converter's JSON (EDM `_init_kwargs`) or from
//! train.py-style `network_kwargs` + `interface_kwargs`, with the official defaults.

use tiw_converters::Json;

use crate::{ModelError, Result};

/// Noise embedding of SongUNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingType {
    /// Sinusoidal with fixed frequencies (DDPM++).
    Positional,
    /// Random Fourier features (NCSN++).
    Fourier,
}

/// SongUNet encoder variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderType {
    /// Plain.
    Standard,
    /// Input skips per level.
    Skip,
    /// Residual input pyramid (NCSN++).
    Residual,
}

/// SongUNet decoder variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderType {
    /// Plain.
    Standard,
    /// Output skips per level.
    Skip,
}

/// The constructor arguments SongUNet and DhariwalUNet share (SPEC §2.2, §2.3); each
/// network's own defaults are [`UNetDefaults::SONG`] and [`UNetDefaults::DHARIWAL`].
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    /// Image resolution.
    pub img_resolution: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Class-label dimension (0 = unconditional).
    pub label_dim: usize,
    /// Augmentation-label dimension (0 = none).
    pub augment_dim: usize,
    /// Base width.
    pub model_channels: usize,
    /// Width multipliers per level.
    pub channel_mult: Vec<usize>,
    /// Embedding width multiplier.
    pub channel_mult_emb: usize,
    /// Blocks per level.
    pub num_blocks: usize,
    /// Resolutions with self-attention.
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability (training).
    pub dropout: f64,
    /// Class-label dropout probability (training): a sample's labels are zeroed when its
    /// `U(0,1)` draw is below it.
    pub label_dropout: f64,
}

/// The defaults of the [`UNetConfig`] fields that differ between the two networks.
#[derive(Debug, Clone, Copy)]
pub struct UNetDefaults {
    /// `model_channels`.
    pub model_channels: usize,
    /// `channel_mult`.
    pub channel_mult: &'static [usize],
    /// `num_blocks`.
    pub num_blocks: usize,
    /// `attn_resolutions`.
    pub attn_resolutions: &'static [usize],
}

impl UNetDefaults {
    /// SongUNet: 128, [1,2,2,2], 4 blocks, attention at 16.
    pub const SONG: UNetDefaults = UNetDefaults {
        model_channels: 128,
        channel_mult: &[1, 2, 2, 2],
        num_blocks: 4,
        attn_resolutions: &[16],
    };
    /// DhariwalUNet: 192, [1,2,3,4], 3 blocks, attention at 32, 16, 8.
    pub const DHARIWAL: UNetDefaults = UNetDefaults {
        model_channels: 192,
        channel_mult: &[1, 2, 3, 4],
        num_blocks: 3,
        attn_resolutions: &[32, 16, 8],
    };
}

/// SongUNet (DDPM++ / NCSN++) hyper-parameters (SPEC §2.2): the shared ones (read through
/// `Deref`, e.g. `cfg.model_channels`) and SongUNet's own.
#[derive(Debug, Clone, PartialEq)]
pub struct SongConfig {
    /// The arguments shared with DhariwalUNet.
    pub unet: UNetConfig,
    /// Noise embedding.
    pub embedding_type: EmbeddingType,
    /// Noise-embedding width multiplier.
    pub channel_mult_noise: usize,
    /// Encoder variant.
    pub encoder_type: EncoderType,
    /// Decoder variant.
    pub decoder_type: DecoderType,
    /// Resampling filter taps.
    pub resample_filter: Vec<f32>,
}

impl std::ops::Deref for SongConfig {
    type Target = UNetConfig;
    fn deref(&self) -> &UNetConfig {
        &self.unet
    }
}

/// DhariwalUNet (ADM) hyper-parameters (SPEC §2.3): it has no options beyond the shared ones.
pub type DhariwalConfig = UNetConfig;

/// The inner network.
#[derive(Debug, Clone, PartialEq)]
pub enum Arch {
    /// SongUNet.
    Song(SongConfig),
    /// DhariwalUNet.
    Dhariwal(DhariwalConfig),
}

/// Preconditioning (SPEC §2.4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Precond {
    /// EDMPrecond.
    Edm {
        /// Smallest supported σ.
        sigma_min: f64,
        /// Largest supported σ.
        sigma_max: f64,
        /// σ_data.
        sigma_data: f64,
    },
    /// VPPrecond.
    Vp {
        /// β_d.
        beta_d: f64,
        /// β_min.
        beta_min: f64,
        /// M.
        m: f64,
        /// ε_t.
        epsilon_t: f64,
    },
    /// VEPrecond.
    Ve {
        /// σ_min.
        sigma_min: f64,
        /// σ_max.
        sigma_max: f64,
    },
    /// iDDPMPrecond.
    IDdpm {
        /// C_1.
        c1: f64,
        /// C_2.
        c2: f64,
        /// M.
        m: usize,
    },
}

/// A preconditioned EDM network.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Preconditioning.
    pub precond: Precond,
    /// Image resolution.
    pub img_resolution: usize,
    /// Image channels.
    pub img_channels: usize,
    /// Class-label dimension.
    pub label_dim: usize,
    /// `use_fp16`: the official code runs the inner network in f16 on CUDA (and in f32 on the
    /// CPU); honoured through `edm::precond::official_fp16` / `EdmDenoiser::set_fp16`.
    pub use_fp16: bool,
    /// The inner network.
    pub arch: Arch,
}

impl Precond {
    /// `σ(t) = sqrt(exp(½β_d t² + β_min t) − 1)` of VP preconditioning, in f32 as the
    /// official code evaluates it (for tiny t the f32 `exp − 1` cancels: σ(1e-5) comes out
    /// as 9.766e-4 rather than 1.0e-3, and that is the `sigma_min` EDM's sampler clamps to).
    pub fn vp_sigma(beta_d: f64, beta_min: f64, t: f64) -> f64 {
        let t = t as f32;
        let arg = (0.5 * beta_d) as f32 * (t * t) + beta_min as f32 * t;
        (arg.exp() - 1.0).sqrt() as f64
    }

    /// `σ⁻¹(σ) = (sqrt(β_min² + 2β_d ln(1+σ²)) − β_min)/β_d`.
    pub fn vp_sigma_inv(beta_d: f64, beta_min: f64, sigma: f64) -> f64 {
        ((beta_min * beta_min + 2.0 * beta_d * (1.0 + sigma * sigma).ln()).sqrt() - beta_min) / beta_d
    }

    /// Smallest σ the network supports.
    pub fn sigma_min(&self) -> f64 {
        match *self {
            Precond::Edm { sigma_min, .. } | Precond::Ve { sigma_min, .. } => sigma_min,
            Precond::Vp {
                beta_d,
                beta_min,
                epsilon_t,
                ..
            } => Self::vp_sigma(beta_d, beta_min, epsilon_t),
            Precond::IDdpm { c1, c2, m } => crate::edm::precond::iddpm_u(m, c1, c2)[m - 1] as f64,
        }
    }

    /// Largest σ the network supports.
    pub fn sigma_max(&self) -> f64 {
        match *self {
            Precond::Edm { sigma_max, .. } | Precond::Ve { sigma_max, .. } => sigma_max,
            Precond::Vp { beta_d, beta_min, .. } => Self::vp_sigma(beta_d, beta_min, 1.0),
            Precond::IDdpm { c1, c2, m } => crate::edm::precond::iddpm_u(m, c1, c2)[0] as f64,
        }
    }
}

struct Kw<'a>(Vec<&'a [(String, Json)]>);

impl Kw<'_> {
    fn get(&self, k: &str) -> Option<&Json> {
        self.0
            .iter()
            .find_map(|m| m.iter().find(|(key, _)| key == k).map(|(_, v)| v))
    }
    fn usize(&self, k: &str, d: usize) -> Result<usize> {
        match self.get(k) {
            None | Some(Json::Null) => Ok(d),
            Some(v) => v.as_i64().filter(|&i| i >= 0).map(|i| i as usize).ok_or_else(|| {
                ModelError::Config(format!("{k} must be a non-negative int, got {}", v.to_text()))
            }),
        }
    }
    fn f64(&self, k: &str, d: f64) -> Result<f64> {
        match self.get(k) {
            None | Some(Json::Null) => Ok(d),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| ModelError::Config(format!("{k} must be a number, got {}", v.to_text()))),
        }
    }
    fn bool(&self, k: &str, d: bool) -> Result<bool> {
        match self.get(k) {
            None | Some(Json::Null) => Ok(d),
            Some(Json::Bool(b)) => Ok(*b),
            Some(v) => Err(ModelError::Config(format!(
                "{k} must be a bool, got {}",
                v.to_text()
            ))),
        }
    }
    fn str<'s>(&'s self, k: &str, d: &'s str) -> Result<&'s str> {
        match self.get(k) {
            None | Some(Json::Null) => Ok(d),
            Some(v) => v
                .as_str()
                .ok_or_else(|| ModelError::Config(format!("{k} must be a string"))),
        }
    }
    fn list(&self, k: &str, d: &[f64]) -> Result<Vec<f64>> {
        match self.get(k) {
            None | Some(Json::Null) => Ok(d.to_vec()),
            Some(Json::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_f64()
                        .ok_or_else(|| ModelError::Config(format!("{k} must be a list of numbers")))
                })
                .collect(),
            Some(v) => Err(ModelError::Config(format!(
                "{k} must be a list, got {}",
                v.to_text()
            ))),
        }
    }
    fn ulist(&self, k: &str, d: &[usize]) -> Result<Vec<usize>> {
        let d: Vec<f64> = d.iter().map(|&x| x as f64).collect();
        Ok(self.list(k, &d)?.into_iter().map(|x| x as usize).collect())
    }
}

fn obj<'a>(j: &'a Json, what: &str) -> Result<&'a [(String, Json)]> {
    match j {
        Json::Object(m) => Ok(m),
        _ => Err(ModelError::Config(format!("{what} is not an object"))),
    }
}

/// The wrapper's keyword arguments (outer kwargs, or train.py's `network_kwargs` +
/// `interface_kwargs`) and its class name without the module path.
fn wrapper_kwargs(cfg: &Json) -> Result<(String, Kw<'_>)> {
    if let Some(nk) = cfg.get("network_kwargs") {
        let class = nk.get("class_name").and_then(Json::as_str).unwrap_or("");
        let mut kw = Kw(vec![obj(nk, "network_kwargs")?]);
        if let Some(i) = cfg.get("interface_kwargs") {
            kw.0.push(obj(i, "interface_kwargs")?);
        }
        return Ok((class.rsplit('.').next().unwrap_or("").to_string(), kw));
    }
    let class = cfg.get("class_name").and_then(Json::as_str).unwrap_or("");
    let kw = cfg
        .get("init_kwargs")
        .ok_or_else(|| ModelError::Config("no init_kwargs in the configuration".into()))?;
    Ok((class.to_string(), Kw(vec![obj(kw, "init_kwargs")?])))
}

impl Precond {
    /// The preconditioning of wrapper `class` with the official defaults (SPEC §2.4), the
    /// wrapper's default inner network and its output-channel multiplier.
    fn from_kwargs(class: &str, kw: &Kw) -> Result<(Self, &'static str, usize)> {
        Ok(match class {
            "EDMPrecond" => (
                Precond::Edm {
                    sigma_min: kw.f64("sigma_min", 0.0)?,
                    sigma_max: kw.f64("sigma_max", f64::INFINITY)?,
                    sigma_data: kw.f64("sigma_data", 0.5)?,
                },
                "DhariwalUNet",
                1,
            ),
            "VPPrecond" => (
                Precond::Vp {
                    beta_d: kw.f64("beta_d", 19.9)?,
                    beta_min: kw.f64("beta_min", 0.1)?,
                    m: kw.f64("M", 1000.0)?,
                    epsilon_t: kw.f64("epsilon_t", 1e-5)?,
                },
                "SongUNet",
                1,
            ),
            "VEPrecond" => (
                Precond::Ve {
                    sigma_min: kw.f64("sigma_min", 0.02)?,
                    sigma_max: kw.f64("sigma_max", 100.0)?,
                },
                "SongUNet",
                1,
            ),
            "iDDPMPrecond" => (
                Precond::IDdpm {
                    c1: kw.f64("C_1", 0.001)?,
                    c2: kw.f64("C_2", 0.008)?,
                    m: kw.usize("M", 1000)?,
                },
                "DhariwalUNet",
                2,
            ),
            other => return Err(ModelError::Config(format!("unsupported network class {other:?}"))),
        })
    }
}

impl UNetConfig {
    /// The shared arguments read from `kw`, `d` giving every default.
    fn from_kwargs(kw: &Kw, d: &UNetConfig) -> Result<Self> {
        Ok(UNetConfig {
            img_resolution: kw.usize("img_resolution", d.img_resolution)?,
            in_channels: d.in_channels,
            out_channels: d.out_channels,
            label_dim: kw.usize("label_dim", d.label_dim)?,
            augment_dim: kw.usize("augment_dim", d.augment_dim)?,
            model_channels: kw.usize("model_channels", d.model_channels)?,
            channel_mult: kw.ulist("channel_mult", &d.channel_mult)?,
            channel_mult_emb: kw.usize("channel_mult_emb", d.channel_mult_emb)?,
            num_blocks: kw.usize("num_blocks", d.num_blocks)?,
            attn_resolutions: kw.ulist("attn_resolutions", &d.attn_resolutions)?,
            dropout: kw.f64("dropout", d.dropout)?,
            label_dropout: kw.f64("label_dropout", d.label_dropout)?,
        })
    }
}

impl SongConfig {
    /// SongUNet's arguments read from `kw` (shared ones defaulting to `d`).
    fn from_kwargs(kw: &Kw, d: &UNetConfig) -> Result<Self> {
        Ok(SongConfig {
            unet: UNetConfig::from_kwargs(kw, d)?,
            embedding_type: match kw.str("embedding_type", "positional")? {
                "positional" => EmbeddingType::Positional,
                "fourier" => EmbeddingType::Fourier,
                o => return Err(ModelError::Config(format!("embedding_type {o:?}"))),
            },
            channel_mult_noise: kw.usize("channel_mult_noise", 1)?,
            encoder_type: match kw.str("encoder_type", "standard")? {
                "standard" => EncoderType::Standard,
                "skip" => EncoderType::Skip,
                "residual" => EncoderType::Residual,
                o => return Err(ModelError::Config(format!("encoder_type {o:?}"))),
            },
            decoder_type: match kw.str("decoder_type", "standard")? {
                "standard" => DecoderType::Standard,
                "skip" => DecoderType::Skip,
                o => return Err(ModelError::Config(format!("decoder_type {o:?}"))),
            },
            resample_filter: kw
                .list("resample_filter", &[1.0, 1.0])?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
        })
    }
}

impl NetConfig {
    /// From a converter configuration (`class_name`, `init_kwargs`, optional nested
    /// `model.init_kwargs`) or a train.py-style one (`network_kwargs` with `class_name`,
    /// `interface_kwargs`).
    pub fn from_json(cfg: &Json) -> Result<Self> {
        let (class, kw) = wrapper_kwargs(cfg)?;
        let img_resolution = kw.usize("img_resolution", 0)?;
        let img_channels = kw.usize("img_channels", 0)?;
        if img_resolution == 0 || img_channels == 0 {
            return Err(ModelError::Config(
                "img_resolution and img_channels are required".into(),
            ));
        }
        let label_dim = kw.usize("label_dim", 0)?;
        let use_fp16 = kw.bool("use_fp16", false)?;
        let (precond, default_model, out_mul) = Precond::from_kwargs(&class, &kw)?;
        // The nested model's own kwargs (snapshots) are authoritative for the architecture.
        let model_kw = match cfg.get("model").and_then(|m| m.get("init_kwargs")) {
            Some(m) => Kw(vec![obj(m, "model.init_kwargs")?]),
            None => Kw(kw.0.clone()),
        };
        let model_type = kw.str("model_type", default_model)?;
        let defaults = |d: UNetDefaults| -> Result<UNetConfig> {
            Ok(UNetConfig {
                img_resolution,
                in_channels: model_kw.usize("in_channels", img_channels)?,
                out_channels: model_kw.usize("out_channels", img_channels * out_mul)?,
                label_dim,
                augment_dim: 0,
                model_channels: d.model_channels,
                channel_mult: d.channel_mult.to_vec(),
                channel_mult_emb: 4,
                num_blocks: d.num_blocks,
                attn_resolutions: d.attn_resolutions.to_vec(),
                dropout: 0.10,
                label_dropout: 0.0,
            })
        };
        let arch = match model_type {
            "SongUNet" => Arch::Song(SongConfig::from_kwargs(
                &model_kw,
                &defaults(UNetDefaults::SONG)?,
            )?),
            "DhariwalUNet" => Arch::Dhariwal(UNetConfig::from_kwargs(
                &model_kw,
                &defaults(UNetDefaults::DHARIWAL)?,
            )?),
            other => return Err(ModelError::Config(format!("unsupported model_type {other:?}"))),
        };
        Ok(NetConfig {
            precond,
            img_resolution,
            img_channels,
            label_dim,
            use_fp16,
            arch,
        })
    }

    /// The inner network's arguments shared by both architectures.
    pub fn unet(&self) -> &UNetConfig {
        match &self.arch {
            Arch::Song(s) => &s.unet,
            Arch::Dhariwal(d) => d,
        }
    }

    /// Augmentation-label dimension of the inner network.
    pub fn augment_dim(&self) -> usize {
        self.unet().augment_dim
    }
}
