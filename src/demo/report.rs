//! The demo's report: per model, the class proportions of its samples (as labelled by the
//! [`Probe`]), the total-variation distance to the uniform target, a Fréchet distance in the
//! probe's feature space against a balanced held-out reference, and paired differences to the
//! baseline (DSM) model; written as `report.md`, `report.json`, PNG sample grids and a bar
//! chart of class proportions.
//!
//! * Proportions: `p_k = #{i : probe(x_i) = k} / N`.
//! * Total variation to uniform: `TV(p) = ½ Σ_k |p_k − 1/K|` (0 = balanced; a one-hot `p`
//!   gives `1 − 1/K`). These and the percentile intervals live in
//!   [`crate::eval::proportions`] (shared with `tiw eval proportions`).
//! * Fréchet distance: `‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂)` of the probe's 64-d
//!   features ([`crate::fid::distance::frechet_distance`]; `μ`, `Σ` as EDM's `fid.py`
//!   computes them, [`FeatureStats`]).
//! * Paired differences `Δ = metric(model) − metric(baseline)`. When both models have the same
//!   number of samples (the demo draws them from the same latents), a 95% percentile
//!   bootstrap interval resamples latent indices jointly for both models (seeded ChaCha8).
//!
//! All numbers go to `report.json` under stable keys (see [`Report::to_json`]).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use serde_json::{json, Value};

use super::probe::{Probe, FEATURE_DIM};
use super::shapes::{CHANNELS, CLASS_NAMES, IMAGE_BYTES, NUM_CLASSES, RES};
use crate::fid::distance::frechet_distance;
use crate::fid::stats::{FeatureStats, MuSigma};

/// Version tag of `report.json`'s layout.
pub const SCHEMA: &str = "tiw-demo-report/1";

/// Generated samples of one model (uint8 NHWC 16×16 RGB).
#[derive(Debug, Clone)]
pub struct ModelSamples {
    /// Model name (`dsm`, `tiw-official`, ...); also names its sample-grid file.
    pub name: String,
    /// uint8 NHWC pixels.
    pub images: Vec<u8>,
}

/// Everything the report needs; the orchestrator fills it.
#[derive(Debug, Clone, Default)]
pub struct ReportInputs {
    /// Title of `report.md`.
    pub title: String,
    /// Demo seed.
    pub seed: u64,
    /// Settings echoed into the report (name, value).
    pub settings: Vec<(String, String)>,
    /// Target class proportions (the balanced reference: uniform).
    pub target_proportions: Vec<f64>,
    /// Class proportions of the observed training data (true labels).
    pub data_proportions: Vec<f64>,
    /// The observed training data's images, for its Fréchet distance (optional).
    pub data_images: Option<Vec<u8>>,
    /// Balanced held-out images: the Fréchet reference.
    pub reference_images: Vec<u8>,
    /// Samples per model, in report order.
    pub models: Vec<ModelSamples>,
    /// Name of the model the paired differences are taken against (DSM).
    pub baseline: Option<String>,
    /// Held-out accuracy of the probe classifier.
    pub probe_accuracy: f64,
    /// Held-out accuracy of the time-dependent discriminator at a few noise levels:
    /// (σ, accuracy).
    pub discriminator_accuracy: Vec<(f64, f64)>,
    /// Wall time per stage in seconds, in stage order.
    pub stage_seconds: Vec<(String, f64)>,
    /// Total wall time in seconds.
    pub total_seconds: f64,
    /// Bootstrap resamples for the paired intervals (0 = no intervals).
    pub bootstrap: usize,
}

/// Metrics of one image set.
#[derive(Debug, Clone, PartialEq)]
pub struct SetMetrics {
    /// Name (`data` or a model name).
    pub name: String,
    /// Number of images.
    pub num_samples: usize,
    /// Images per predicted class.
    pub counts: Vec<usize>,
    /// Class proportions.
    pub proportions: Vec<f64>,
    /// `½ Σ |p_k − 1/K|`.
    pub tv_to_uniform: f64,
    /// Fréchet distance to the reference in probe-feature space (None when not computed).
    pub frechet: Option<f64>,
}

/// A paired difference to the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    /// Model.
    pub model: String,
    /// Baseline model.
    pub baseline: String,
    /// `TV(model) − TV(baseline)`.
    pub delta_tv: f64,
    /// 95% bootstrap interval of `delta_tv`.
    pub delta_tv_ci95: Option<(f64, f64)>,
    /// `FD(model) − FD(baseline)`.
    pub delta_frechet: f64,
    /// 95% bootstrap interval of `delta_frechet`.
    pub delta_frechet_ci95: Option<(f64, f64)>,
    /// `FD(model) / FD(baseline)`.
    pub frechet_ratio: f64,
}

/// The computed report.
#[derive(Debug, Clone)]
pub struct Report {
    /// Observed training data (proportions from the true labels; TV; FD when images given).
    pub data: SetMetrics,
    /// One entry per model, in input order.
    pub models: Vec<SetMetrics>,
    /// Paired differences to the baseline (empty without one).
    pub paired: Vec<Paired>,
}

use crate::eval::proportions::{bootstrap_indices, ci95, counts};
pub use crate::eval::proportions::{proportions, tv_distance, tv_to_uniform};

/// `μ`, `Σ` of row-major `[N, dim]` features (EDM's estimator, needs N ≥ 2).
pub fn mu_sigma(features: &[f64], dim: usize) -> Result<MuSigma> {
    if dim == 0 || features.len() % dim != 0 {
        bail!("feature matrix of {} values is not N × {dim}", features.len());
    }
    let mut s = FeatureStats::new(dim);
    s.add_f64(features);
    s.mu_sigma()
}

/// Fréchet distance between the Gaussians fitted to two feature matrices `[N, dim]`.
pub fn frechet_of_features(a: &[f64], b: &[f64], dim: usize) -> Result<f64> {
    Ok(frechet_distance(&mu_sigma(a, dim)?, &mu_sigma(b, dim)?)?.fid)
}

fn check_images(what: &str, images: &[u8]) -> Result<usize> {
    if images.len() % IMAGE_BYTES != 0 {
        bail!(
            "{what}: {} bytes is not a whole number of {RES}×{RES}×{CHANNELS} images",
            images.len()
        );
    }
    Ok(images.len() / IMAGE_BYTES)
}

/// Rows `idx` of a row-major matrix with `dim` columns.
fn pick_rows(m: &[f64], dim: usize, idx: &[usize]) -> Vec<f64> {
    idx.iter()
        .flat_map(|&i| m[i * dim..(i + 1) * dim].iter().copied())
        .collect()
}

/// Computes every number of the report.
pub fn compute(inputs: &ReportInputs, probe: &Probe) -> Result<Report> {
    let k = NUM_CLASSES;
    if inputs.data_proportions.len() != k {
        bail!(
            "data_proportions has {} entries; expected {k}",
            inputs.data_proportions.len()
        );
    }
    if check_images("reference images", &inputs.reference_images)? < 2 {
        bail!("the Fréchet reference needs at least 2 images");
    }
    let ref_stats = mu_sigma(&probe.features_images(&inputs.reference_images)?, FEATURE_DIM)?;
    let fd = |features: &[f64]| -> Result<f64> {
        Ok(frechet_distance(&mu_sigma(features, FEATURE_DIM)?, &ref_stats)?.fid)
    };
    let data_fd = match &inputs.data_images {
        Some(im) if check_images("data images", im)? >= 2 => Some(fd(&probe.features_images(im)?)?),
        _ => None,
    };
    let data = SetMetrics {
        name: "data".into(),
        num_samples: inputs.data_images.as_ref().map_or(0, |im| im.len() / IMAGE_BYTES),
        counts: Vec::new(),
        proportions: inputs.data_proportions.clone(),
        tv_to_uniform: tv_to_uniform(&inputs.data_proportions),
        frechet: data_fd,
    };
    // per model: predictions and features (kept for the paired bootstrap)
    let mut per_model = Vec::new();
    let mut models = Vec::new();
    for m in &inputs.models {
        let n = check_images(&format!("samples of {}", m.name), &m.images)?;
        if n < 2 {
            bail!("model {}: {n} sample(s); need at least 2", m.name);
        }
        let pred = probe.predict_images(&m.images)?;
        let feats = probe.features_images(&m.images)?;
        let p = proportions(&pred, k)?;
        models.push(SetMetrics {
            name: m.name.clone(),
            num_samples: n,
            counts: counts(&pred, k)?,
            tv_to_uniform: tv_to_uniform(&p),
            proportions: p,
            frechet: Some(fd(&feats)?),
        });
        per_model.push((pred, feats));
    }
    let mut paired = Vec::new();
    if let Some(base) = &inputs.baseline {
        let bi = models
            .iter()
            .position(|m| &m.name == base)
            .with_context(|| format!("baseline model {base:?} is not among the models"))?;
        for (mi, m) in models.iter().enumerate() {
            if mi == bi {
                continue;
            }
            let b = &models[bi];
            let (fm, fb) = (m.frechet.unwrap_or(f64::NAN), b.frechet.unwrap_or(f64::NAN));
            let (mut dtv, mut dfd) = (None, None);
            if inputs.bootstrap > 0 && m.num_samples == b.num_samples {
                let n = m.num_samples;
                let (mut tvs, mut fds) = (Vec::new(), Vec::new());
                let seed = inputs.seed ^ 0xB007_5742 ^ mi as u64;
                for idx in bootstrap_indices(n, inputs.bootstrap, seed) {
                    let tv_of = |pred: &[u32]| -> Result<f64> {
                        let l: Vec<u32> = idx.iter().map(|&i| pred[i]).collect();
                        Ok(tv_to_uniform(&proportions(&l, k)?))
                    };
                    tvs.push(tv_of(&per_model[mi].0)? - tv_of(&per_model[bi].0)?);
                    let fd_m = fd(&pick_rows(&per_model[mi].1, FEATURE_DIM, &idx))?;
                    let fd_b = fd(&pick_rows(&per_model[bi].1, FEATURE_DIM, &idx))?;
                    fds.push(fd_m - fd_b);
                }
                dtv = ci95(tvs);
                dfd = ci95(fds);
            }
            paired.push(Paired {
                model: m.name.clone(),
                baseline: b.name.clone(),
                delta_tv: m.tv_to_uniform - b.tv_to_uniform,
                delta_tv_ci95: dtv,
                delta_frechet: fm - fb,
                delta_frechet_ci95: dfd,
                frechet_ratio: fm / fb,
            });
        }
    }
    Ok(Report { data, models, paired })
}

/// A model name as a file-name stem: ASCII letters, digits, `-`, `_`; others become `_`.
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Series colours of the bar chart: target, data, then one per model (cycled).
const SERIES_COLOURS: [(u8, u8, u8); 8] = [
    (160, 160, 160),
    (50, 50, 50),
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
];
/// Swatch colours under each class group (the classes' own colours).
const CLASS_SWATCH: [(u8, u8, u8); NUM_CLASSES] =
    [(217, 38, 38), (51, 204, 64), (51, 89, 230), (230, 217, 51)];

fn series_colour(i: usize) -> (u8, u8, u8) {
    if i < 2 {
        SERIES_COLOURS[i]
    } else {
        SERIES_COLOURS[2 + (i - 2) % (SERIES_COLOURS.len() - 2)]
    }
}

fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// A grid of the first `cols·rows_max` images (uint8 NHWC 16×16 RGB), `cols` per row,
/// 1-pixel dark gaps, upscaled ×`scale` by pixel repetition. Returns (RGB8, width, height).
pub fn sample_grid(images: &[u8], cols: usize, rows_max: usize, scale: usize) -> (Vec<u8>, u32, u32) {
    let n = (images.len() / IMAGE_BYTES).min(cols * rows_max);
    let rows = n.div_ceil(cols).max(1);
    let (tw, th) = (cols * (RES + 1) + 1, rows * (RES + 1) + 1);
    let mut base = vec![32u8; tw * th * 3];
    for i in 0..n {
        let (oy, ox) = (1 + (i / cols) * (RES + 1), 1 + (i % cols) * (RES + 1));
        for y in 0..RES {
            for x in 0..RES {
                let s = i * IMAGE_BYTES + (y * RES + x) * 3;
                let d = ((oy + y) * tw + ox + x) * 3;
                base[d..d + 3].copy_from_slice(&images[s..s + 3]);
            }
        }
    }
    let (w, h) = (tw * scale, th * scale);
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let s = ((y / scale) * tw + x / scale) * 3;
            out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&base[s..s + 3]);
        }
    }
    (out, w as u32, h as u32)
}

/// Draws the class-proportion bar chart (no text: the legend is in `report.md`): one group
/// per class (a swatch of the class colour under it), one bar per series, horizontal grid
/// lines every 0.1. Returns RGB8 pixels of `w × h`.
pub fn bar_chart(series: &[Vec<f64>], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| anyhow!("bar chart: {e:?}");
        root.fill(&WHITE).map_err(err)?;
        let (l, r, t, b) = (20i32, 10i32, 10i32, 30i32);
        let (pw, ph) = (w as i32 - l - r, h as i32 - t - b);
        let ymax = series
            .iter()
            .flatten()
            .fold(0.0f64, |m, &v| m.max(v))
            .clamp(0.3, 1.0);
        let ymax = (ymax * 10.0).ceil() / 10.0;
        let ypx = |v: f64| t + ph - (v / ymax * ph as f64).round() as i32;
        let mut g = 0.0;
        while g <= ymax + 1e-9 {
            let y = ypx(g);
            let style = if g == 0.0 {
                BLACK.stroke_width(1)
            } else {
                RGBColor(220, 220, 220).stroke_width(1)
            };
            root.draw(&PathElement::new(vec![(l, y), (l + pw, y)], style))
                .map_err(err)?;
            g += 0.1;
        }
        let k = series.first().map_or(0, Vec::len).max(1);
        let gw = pw as f64 / k as f64;
        let bw = gw * 0.8 / series.len().max(1) as f64;
        for c in 0..k {
            let gx = l as f64 + gw * c as f64 + gw * 0.1;
            for (s, vals) in series.iter().enumerate() {
                let v = vals.get(c).copied().unwrap_or(0.0).clamp(0.0, ymax);
                let x0 = (gx + bw * s as f64).round() as i32;
                let x1 = (gx + bw * (s + 1) as f64).round() as i32 - 1;
                let (cr, cg, cb) = series_colour(s);
                root.draw(&Rectangle::new(
                    [(x0, ypx(v)), (x1.max(x0), ypx(0.0))],
                    RGBColor(cr, cg, cb).filled(),
                ))
                .map_err(err)?;
            }
            if let Some(&(cr, cg, cb)) = CLASS_SWATCH.get(c) {
                let cx = (l as f64 + gw * (c as f64 + 0.5)) as i32;
                let y0 = t + ph + 8;
                root.draw(&Rectangle::new(
                    [(cx - 8, y0), (cx + 8, y0 + 14)],
                    RGBColor(cr, cg, cb).filled(),
                ))
                .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(buf)
}

fn xml_escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The class-proportion chart as a self-explaining SVG: title, y-axis label and tick values
/// (every 0.1 from 0), the class names under their groups, and a legend naming each series
/// (`names[i]` for `series[i]`, in the PNG's colours).
pub fn bar_chart_svg(series: &[Vec<f64>], names: &[String], class_names: &[&str]) -> String {
    use std::fmt::Write as _;
    let (w, h) = (760.0f64, 420.0f64);
    let (l, r, t, b) = (70.0, 200.0, 50.0, 60.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let ymax = series
        .iter()
        .flatten()
        .fold(0.0f64, |m, &v| m.max(v))
        .clamp(0.3, 1.0);
    let ymax = (ymax * 10.0).ceil() / 10.0;
    let ypx = |v: f64| t + ph - v / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">Class proportions: target, observed data and each model's samples (probe labels)</text>",
        w / 2.0
    );
    let mut k = 0;
    while k as f64 * 0.1 <= ymax + 1e-9 {
        let v = k as f64 * 0.1;
        let y = ypx(v);
        let colour = if k == 0 { "black" } else { "#dcdcdc" };
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"{colour}\"/>",
            l + pw
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>",
            l - 6.0,
            y + 4.0
        );
        k += 1;
    }
    let _ = writeln!(
        s,
        "<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">fraction of images in the class</text>",
        t + ph / 2.0
    );
    let kc = series.first().map_or(0, Vec::len).max(1);
    let gw = pw / kc as f64;
    let bw = gw * 0.8 / series.len().max(1) as f64;
    for c in 0..kc {
        let gx = l + gw * c as f64 + gw * 0.1;
        for (i, vals) in series.iter().enumerate() {
            let v = vals.get(c).copied().unwrap_or(0.0).clamp(0.0, ymax);
            let (y0, y1) = (ypx(v), ypx(0.0));
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {v:.3}</title></rect>",
                gx + bw * i as f64,
                (bw - 1.0).max(1.0),
                y1 - y0,
                hex(series_colour(i)),
                xml_escape(names.get(i).map_or("", String::as_str))
            );
        }
        let name = class_names.get(c).copied().unwrap_or("");
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            l + gw * (c as f64 + 0.5),
            t + ph + 18.0,
            xml_escape(name)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">class</text>",
        l + pw / 2.0,
        h - 14.0
    );
    for (i, n) in names.iter().enumerate() {
        let y = t + 10.0 + 20.0 * i as f64;
        let x = l + pw + 16.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"14\" fill=\"{}\"/>",
            y - 11.0,
            hex(series_colour(i))
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{y:.1}\">{}</text>",
            x + 20.0,
            xml_escape(n)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn opt_num(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |x| json!(x))
}

fn opt_pair(v: Option<(f64, f64)>) -> Value {
    v.map_or(Value::Null, |(a, b)| json!([a, b]))
}

impl Report {
    /// `report.json`'s content. Keys: `schema`, `title`, `seed`, `settings` {name: value},
    /// `classes` [names], `target_proportions`, `data` {`proportions`, `tv_to_uniform`,
    /// `frechet`}, `probe` {`heldout_accuracy`, `feature_dim`}, `discriminator`
    /// {`heldout_accuracy`: [{`sigma`, `accuracy`}]}, `models` [{`name`, `num_samples`,
    /// `counts`, `proportions`, `tv_to_uniform`, `frechet`, `samples_png`}], `baseline`,
    /// `paired` [{`model`, `baseline`, `delta_tv`, `delta_tv_ci95`, `delta_frechet`,
    /// `delta_frechet_ci95`, `frechet_ratio`}], `timings_s` {stage: seconds}, `total_s`,
    /// `files` {`report_md`, `chart_png`}. Missing numbers are `null`.
    pub fn to_json(&self, inputs: &ReportInputs) -> Value {
        json!({
            "schema": SCHEMA,
            "title": inputs.title,
            "seed": inputs.seed,
            "settings": inputs.settings.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "classes": CLASS_NAMES,
            "target_proportions": inputs.target_proportions,
            "data": {
                "proportions": self.data.proportions,
                "tv_to_uniform": self.data.tv_to_uniform,
                "frechet": opt_num(self.data.frechet),
            },
            "probe": {"heldout_accuracy": inputs.probe_accuracy, "feature_dim": FEATURE_DIM},
            "discriminator": {
                "heldout_accuracy": inputs.discriminator_accuracy.iter()
                    .map(|(s, a)| json!({"sigma": s, "accuracy": a})).collect::<Vec<_>>(),
            },
            "models": self.models.iter().map(|m| json!({
                "name": m.name,
                "num_samples": m.num_samples,
                "counts": m.counts,
                "proportions": m.proportions,
                "tv_to_uniform": m.tv_to_uniform,
                "frechet": opt_num(m.frechet),
                "samples_png": format!("samples_{}.png", file_stem(&m.name)),
            })).collect::<Vec<_>>(),
            "baseline": inputs.baseline,
            "paired": self.paired.iter().map(|p| json!({
                "model": p.model,
                "baseline": p.baseline,
                "delta_tv": p.delta_tv,
                "delta_tv_ci95": opt_pair(p.delta_tv_ci95),
                "delta_frechet": p.delta_frechet,
                "delta_frechet_ci95": opt_pair(p.delta_frechet_ci95),
                "frechet_ratio": p.frechet_ratio,
            })).collect::<Vec<_>>(),
            "timings_s": inputs.stage_seconds.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "total_s": inputs.total_seconds,
            "files": {"report_md": "report.md", "chart_png": "class_proportions.png"},
        })
    }

    /// `report.md`'s content (Markdown tables).
    pub fn to_markdown(&self, inputs: &ReportInputs) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let f = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.3}"));
        let ci = |v: Option<(f64, f64)>| v.map_or(String::new(), |(a, b)| format!(" [{a:+.3}, {b:+.3}]"));
        let _ = writeln!(
            s,
            "# {}\n",
            if inputs.title.is_empty() {
                "TIW-DSM demo"
            } else {
                &inputs.title
            }
        );
        let _ = writeln!(
            s,
            "Seed {}. Total wall time {:.1} s.\n",
            inputs.seed, inputs.total_seconds
        );
        if !inputs.settings.is_empty() {
            let _ = writeln!(s, "| setting | value |\n|---|---|");
            for (k, v) in &inputs.settings {
                let _ = writeln!(s, "| {k} | {v} |");
            }
            s.push('\n');
        }
        let _ = writeln!(s, "## Class proportions\n");
        let _ = writeln!(
            s,
            "Samples labelled by the probe classifier (held-out accuracy {:.2}%); TV = ½Σ|p_k − 1/{NUM_CLASSES}|; \
             FD = Fréchet distance in the probe's {FEATURE_DIM}-d feature space to a balanced held-out set.\n",
            100.0 * inputs.probe_accuracy
        );
        let _ = write!(s, "| set | n |");
        for c in CLASS_NAMES {
            let _ = write!(s, " {c} |");
        }
        let _ = writeln!(s, " TV to uniform | FD |");
        let _ = writeln!(s, "|---|---:|{}---:|---:|", "---:|".repeat(NUM_CLASSES));
        let row = |s: &mut String, name: &str, n: String, p: &[f64], tv: Option<f64>, fd: Option<f64>| {
            let _ = write!(s, "| {name} | {n} |");
            for v in p {
                let _ = write!(s, " {v:.3} |");
            }
            let _ = writeln!(s, " {} | {} |", f(tv), f(fd));
        };
        row(
            &mut s,
            "target (reference)",
            "–".into(),
            &inputs.target_proportions,
            Some(tv_to_uniform(&inputs.target_proportions)),
            None,
        );
        let dn = if self.data.num_samples > 0 {
            self.data.num_samples.to_string()
        } else {
            "–".into()
        };
        row(
            &mut s,
            "data (observed)",
            dn,
            &self.data.proportions,
            Some(self.data.tv_to_uniform),
            self.data.frechet,
        );
        for m in &self.models {
            row(
                &mut s,
                &m.name,
                m.num_samples.to_string(),
                &m.proportions,
                Some(m.tv_to_uniform),
                m.frechet,
            );
        }
        if !self.paired.is_empty() {
            let _ = writeln!(
                s,
                "\n## Paired differences to {}\n\nSame latents for every model; intervals: 95% bootstrap over \
                 latents ({} resamples).\n",
                self.paired[0].baseline, inputs.bootstrap
            );
            let _ = writeln!(s, "| model | ΔTV | ΔFD | FD ratio |\n|---|---|---|---:|");
            for p in &self.paired {
                let _ = writeln!(
                    s,
                    "| {} | {:+.3}{} | {:+.3}{} | {:.3} |",
                    p.model,
                    p.delta_tv,
                    ci(p.delta_tv_ci95),
                    p.delta_frechet,
                    ci(p.delta_frechet_ci95),
                    p.frechet_ratio
                );
            }
        }
        if !inputs.discriminator_accuracy.is_empty() {
            let _ = writeln!(s, "\n## Discriminator (reference vs biased), held-out accuracy\n\n| σ | accuracy |\n|---:|---:|");
            for (sig, a) in &inputs.discriminator_accuracy {
                let _ = writeln!(s, "| {sig} | {:.3} |", a);
            }
        }
        let _ = writeln!(
            s,
            "\n## Bar chart\n\n![class proportions](class_proportions.png)\n"
        );
        let _ = writeln!(
            s,
            "`class_proportions.svg` is the same chart with its title, axes, tick values and legend.\n"
        );
        let _ = writeln!(
            s,
            "The PNG has no text: groups left to right are the classes {} (a swatch of the class \
             colour under each); the y axis starts at 0 with grey grid lines every 0.1. Bars in each \
             group, left to right:\n",
            CLASS_NAMES.join(", ")
        );
        let mut names = vec!["target (reference)".to_string(), "data (observed)".to_string()];
        names.extend(self.models.iter().map(|m| m.name.clone()));
        for (i, n) in names.iter().enumerate() {
            let _ = writeln!(s, "{}. {n} — colour `{}`", i + 1, hex(series_colour(i)));
        }
        let _ = writeln!(s, "\n## Samples\n");
        for m in &self.models {
            let _ = writeln!(
                s,
                "**{}**\n\n![{}](samples_{}.png)\n",
                m.name,
                m.name,
                file_stem(&m.name)
            );
        }
        if !inputs.stage_seconds.is_empty() {
            let _ = writeln!(s, "## Timings\n\n| stage | seconds |\n|---|---:|");
            for (k, v) in &inputs.stage_seconds {
                let _ = writeln!(s, "| {k} | {v:.1} |");
            }
            let _ = writeln!(s, "| total | {:.1} |", inputs.total_seconds);
        }
        s
    }
}

/// Paths of the files [`write`] produced.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.json`.
    pub json: PathBuf,
    /// `class_proportions.png`.
    pub chart: PathBuf,
    /// `samples_<model>.png`, in model order.
    pub grids: Vec<PathBuf>,
}

/// Computes the report and writes `report.md`, `report.json`, `class_proportions.png` (+ a
/// labelled `class_proportions.svg`) and
/// `samples_<model>.png` (8×8 tiles, ×2) into `outdir` (created if missing).
pub fn write(inputs: &ReportInputs, probe: &Probe, outdir: &Path) -> Result<(Report, ReportFiles)> {
    let report = compute(inputs, probe)?;
    std::fs::create_dir_all(outdir).with_context(|| format!("cannot create {}", outdir.display()))?;
    let mut grids = Vec::new();
    for m in &inputs.models {
        let (rgb, w, h) = sample_grid(&m.images, 8, 8, 2);
        let p = outdir.join(format!("samples_{}.png", file_stem(&m.name)));
        crate::sample::write_png(&p, &rgb, w as usize, h as usize, 3)?;
        grids.push(p);
    }
    let mut series = vec![inputs.target_proportions.clone(), report.data.proportions.clone()];
    series.extend(report.models.iter().map(|m| m.proportions.clone()));
    let (cw, ch) = (640, 320);
    let chart = outdir.join("class_proportions.png");
    crate::sample::write_png(&chart, &bar_chart(&series, cw, ch)?, cw as usize, ch as usize, 3)?;
    let mut names = vec!["target (reference)".to_string(), "data (observed)".to_string()];
    names.extend(report.models.iter().map(|m| m.name.clone()));
    let svg = bar_chart_svg(&series, &names, &CLASS_NAMES);
    crate::train::score::write_atomic(&outdir.join("class_proportions.svg"), svg.as_bytes())?;
    let json_path = outdir.join("report.json");
    let md_path = outdir.join("report.md");
    let text = serde_json::to_string_pretty(&report.to_json(inputs))?;
    crate::train::score::write_atomic(&json_path, text.as_bytes())?;
    crate::train::score::write_atomic(&md_path, report.to_markdown(inputs).as_bytes())?;
    Ok((
        report,
        ReportFiles {
            markdown: md_path,
            json: json_path,
            chart,
            grids,
        },
    ))
}
