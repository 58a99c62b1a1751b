//! `tiw verify`: runs the same inputs through every available runtime (libtorch on the given
//! device, ONNX Runtime's CPU and — with a CUDA device — CUDA execution providers, tract)
//! and, with a reference, compares them with a user's PyTorch outputs; prints a parity table
//! and fails above the tolerance.
//!
//! Error measure, per output key and pair (A, B): `max |A − B| / max |B|` (B = the reference,
//! or for two runtimes the larger-magnitude one: `max |A − B| / max(max |A|, max |B|)`); a NaN
//! or infinity in one array but not at the same place in the other counts as an infinite
//! error. The evaluation itself is `tiw forward`'s ([`crate::forward::evaluate`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tiw_models::config::NetConfig;
use tiw_models::tch_ops::TchOps;

use crate::device::DeviceSpec;
use crate::forward::{self, ForwardOptions, Outputs};
use crate::npz::{self, Array, Data};
use crate::parity::{norm_err, norm_err_symmetric};
use crate::precision::TchPrecision;
use crate::runtime::network::is_onnx_path as is_onnx;
use crate::runtime::{Backend, Runtime};
use crate::sample::denoiser::{Denoiser, NetDenoiser};

/// What `tiw verify` checks (the command line's flags).
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// EDM network (.pkl, .pt, .safetensors or an .onnx from `tiw export`); output `D`.
    pub network: Option<PathBuf>,
    /// ADM feature extractor (.pt or .onnx); output `features`.
    pub extractor: Option<PathBuf>,
    /// Discriminator (.pt or .onnx) on the extractor's features; output `dis_logits`.
    pub discriminator: Option<PathBuf>,
    /// PyTorch outputs in `tiw forward`'s .npz format (None: seeded inputs, runtimes compared
    /// with each other only).
    pub reference: Option<PathBuf>,
    /// Number of generated inputs (without a reference).
    pub batch: usize,
    /// Largest accepted normalised error.
    pub tol: f64,
    /// Device of libtorch (and, for CUDA, of an extra ONNX Runtime CUDA-EP run).
    pub device: DeviceSpec,
    /// Seed of the generated inputs.
    pub seed: u64,
    /// Extractor image resolution, if its layout is ambiguous from the weights.
    pub img_resolution: Option<usize>,
    /// Key of the conditional discriminator's labels in the reference.
    pub condition_key: Option<String>,
}

/// One set of inputs, the outputs to compare, and the reference values if any.
struct Check {
    label: String,
    inputs: Vec<Array>,
    /// (output key, reference key in the reference file).
    keys: Vec<(String, Option<String>)>,
}

/// One row of the parity table: check, output, A, B, max abs error, normalised error.
type Row = (String, String, String, String, f64, f64);

/// One output array of a runtime: (name, shape, values).
type Output = (String, Vec<usize>, Vec<f32>);

fn f32_array(name: &str, shape: Vec<usize>, data: Vec<f32>) -> Array {
    Array {
        name: name.into(),
        shape,
        data: Data::F32(data),
    }
}

/// Standard normal draws (Box–Muller on ChaCha8 uniforms).
fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.gen::<f64>();
            let u2: f64 = rng.gen();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// `n` values spread geometrically over `[lo, hi]` (`lo` alone when n = 1).
fn geomspace(lo: f64, hi: f64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let f = if n > 1 { i as f64 / (n - 1) as f64 } else { 0.0 };
            (lo * (hi / lo).powf(f)) as f32
        })
        .collect()
}

/// (channels, resolution, label_dim, augment_dim, sigma_min, sigma_max) of a network file.
fn net_facts(path: &Path) -> Result<(usize, usize, usize, usize, f64, f64)> {
    if is_onnx(path) {
        let d = NetDenoiser::load(path, Backend::new(Runtime::Tract, DeviceSpec::Cpu))?;
        let i = d.info();
        return Ok((
            i.channels,
            i.resolution,
            i.label_dim,
            i.augment_dim,
            i.sigma_min(),
            i.sigma_max(),
        ));
    }
    let (_, config) = tiw_models::load::read(path)?;
    let config = config.with_context(|| {
        format!(
            "{}: no network configuration in this file (use an EDM snapshot .pkl or a .safetensors made by `tiw convert`)",
            path.display()
        )
    })?;
    let c = NetConfig::from_json(&config).with_context(|| format!("{}", path.display()))?;
    Ok((
        c.img_channels,
        c.img_resolution,
        c.label_dim,
        c.augment_dim(),
        c.precond.sigma_min(),
        c.precond.sigma_max(),
    ))
}

/// Seeded network inputs: `x = y + σ·n` (`y ~ U[−1, 1]`, `n ~ N(0, 1)`), σ spread
/// geometrically over `[max(σ_min, 0.002), min(σ_max, 80)]`, one-hot class labels cycling
/// through the classes, augment labels zero on even rows and `N(0, 0.25)` on odd rows.
fn network_inputs(path: &Path, n: usize, seed: u64) -> Result<Vec<Array>> {
    let (c, r, label_dim, augment_dim, smin, smax) = net_facts(path)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let per = c * r * r;
    let lo = smin.max(0.002);
    let hi = smax.min(80.0).max(lo);
    let sigma = geomspace(lo, hi, n);
    let noise = normals(&mut rng, n * per);
    let x: Vec<f32> = (0..n * per)
        .map(|i| rng.gen_range(-1.0f32..1.0) + sigma[i / per] * noise[i])
        .collect();
    let mut v = vec![
        f32_array("x", vec![n, c, r, r], x),
        f32_array("sigma", vec![n], sigma),
    ];
    if label_dim > 0 {
        let mut l = vec![0f32; n * label_dim];
        for i in 0..n {
            l[i * label_dim + i % label_dim] = 1.0;
        }
        v.push(f32_array("class_labels", vec![n, label_dim], l));
    }
    if augment_dim > 0 {
        let g = normals(&mut rng, n * augment_dim);
        let g = g
            .iter()
            .enumerate()
            .map(|(i, v)| if (i / augment_dim) % 2 == 1 { 0.5 * v } else { 0.0 })
            .collect();
        v.push(f32_array("augment_labels", vec![n, augment_dim], g));
    }
    Ok(v)
}

/// Seeded extractor inputs `x ~ U[−1, 1]`, VP times `t` spread geometrically over
/// [1e−3, 1], and (for a conditional discriminator) int labels `i mod classes` as
/// `condition`.
fn extractor_inputs(a: &VerifyOptions) -> Result<(Vec<Array>, Option<String>)> {
    let fe_path = a
        .extractor
        .as_ref()
        .context("--network or --extractor is required")?;
    let n = a.batch;
    let (c, r) = if is_onnx(fe_path) {
        (
            3,
            a.img_resolution
                .context("an .onnx extractor needs --img-resolution to generate inputs")?,
        )
    } else {
        let o = TchOps::new(tch::Device::Cpu);
        let fe = tiw_models::load::encoder(&o, fe_path, a.img_resolution)?;
        (fe.cfg.in_channels, fe.cfg.image_size)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let x: Vec<f32> = (0..n * c * r * r).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let mut v = vec![
        f32_array("x", vec![n, c, r, r], x),
        f32_array("t", vec![n], geomspace(1e-3, 1.0, n)),
    ];
    let mut key = None;
    if let Some(d) = &a.discriminator {
        let classes = if is_onnx(d) {
            None
        } else {
            let o = TchOps::new(tch::Device::Cpu);
            tiw_models::load::encoder(&o, d, None)?.cfg.num_class
        };
        if let Some(k) = classes {
            v.push(Array {
                name: "condition".into(),
                shape: vec![n],
                data: Data::I64((0..n).map(|i| (i % k) as i64).collect()),
            });
            key = Some("condition".to_string());
        }
    }
    Ok((v, key))
}

/// The runtimes to try: (label, backend).
fn runtimes(device: DeviceSpec) -> Vec<(String, Backend)> {
    let mut v = vec![
        (
            match device {
                DeviceSpec::Cpu => "tch".to_string(),
                DeviceSpec::Cuda(n) => format!("tch-cuda:{n}"),
            },
            Backend::new(Runtime::Tch, device),
        ),
        ("ort".to_string(), Backend::new(Runtime::Ort, DeviceSpec::Cpu)),
    ];
    if let DeviceSpec::Cuda(n) = device {
        v.push((format!("ort-cuda:{n}"), Backend::new(Runtime::Ort, device)));
    }
    v.push(("tract".to_string(), Backend::new(Runtime::Tract, DeviceSpec::Cpu)));
    v
}

fn find<'a>(outs: &'a Outputs, key: &str) -> Option<&'a Output> {
    outs.iter().find(|o| o.0 == key)
}

/// The network checks: against the reference's `D` (and `D_augment`: the output with
/// `augment_labels`, `D` then being the one without), or on seeded inputs.
fn network_checks(a: &VerifyOptions, net: &Path, reference: Option<&[Array]>) -> Result<Vec<Check>> {
    let Some(r) = reference else {
        return Ok(vec![Check {
            label: "D".into(),
            inputs: network_inputs(net, a.batch.max(1), a.seed)?,
            keys: vec![("D".into(), None)],
        }]);
    };
    let rp = a.reference.as_ref().context("reference")?;
    let get = |k: &str| npz::get(r, k, rp).cloned();
    let has = |k: &str| r.iter().any(|x| x.name == k);
    get("D")?;
    let mut base = vec![get("x")?, get("sigma")?];
    if has("class_labels") {
        base.push(get("class_labels")?);
    }
    let check = |label: &str, inputs: Vec<Array>, key: &str| Check {
        label: label.into(),
        inputs,
        keys: vec![("D".into(), Some(key.into()))],
    };
    if has("augment_labels") && has("D_augment") {
        let plain = check("D (no augment labels)", base.clone(), "D");
        base.push(get("augment_labels")?);
        return Ok(vec![plain, check("D (augment labels)", base, "D_augment")]);
    }
    if has("augment_labels") {
        base.push(get("augment_labels")?);
    }
    Ok(vec![check("D", base, "D")])
}

/// The extractor (+ discriminator) check; returns it and the condition key to use.
fn extractor_check(a: &VerifyOptions, reference: Option<&[Array]>) -> Result<(Check, Option<String>)> {
    let mut cond_key = a.condition_key.clone();
    let mut keys = vec![("features".to_string(), None)];
    if a.discriminator.is_some() {
        keys.push(("dis_logits".to_string(), None));
    }
    let inputs = match reference {
        Some(r) => {
            let rp = a.reference.as_ref().context("reference")?;
            for k in keys.iter_mut() {
                npz::get(r, &k.0, rp)?;
                k.1 = Some(k.0.clone());
            }
            let mut v = vec![npz::get(r, "x", rp)?.clone(), npz::get(r, "t", rp)?.clone()];
            if let Some(k) = &cond_key {
                v.push(npz::get(r, k, rp)?.clone());
            }
            v
        }
        None => {
            if a.batch == 0 {
                bail!("--batch must be at least 1");
            }
            let (v, k) = extractor_inputs(a)?;
            if k.is_some() {
                cond_key = k;
            }
            v
        }
    };
    let label = if a.discriminator.is_some() {
        "extractor + discriminator"
    } else {
        "extractor"
    };
    Ok((
        Check {
            label: label.into(),
            inputs,
            keys,
        },
        cond_key,
    ))
}

/// What ran and what was skipped, each line once.
#[derive(Default)]
struct Log {
    ran: Vec<String>,
    skipped: Vec<String>,
}

impl Log {
    fn skip(&mut self, msg: String) {
        if !self.skipped.contains(&msg) {
            self.skipped.push(msg);
        }
    }
    fn ran(&mut self, line: String) {
        if !self.ran.contains(&line) {
            println!("  {line}");
            self.ran.push(line);
        }
    }
}

/// Runs one check on every runtime that can run it: (runtime label, outputs).
fn run_check(
    a: &VerifyOptions,
    ch: &Check,
    cond_key: &Option<String>,
    log: &mut Log,
) -> Vec<(String, Outputs)> {
    let any_onnx = [&a.network, &a.extractor, &a.discriminator]
        .iter()
        .any(|p| p.as_deref().is_some_and(is_onnx));
    let mut results = Vec::new();
    for (label, backend) in runtimes(a.device) {
        if backend.runtime == Runtime::Tch && any_onnx {
            log.skip(format!(
                "{label}: skipped (libtorch runs checkpoints, not .onnx graphs)"
            ));
            continue;
        }
        let fo = ForwardOptions {
            network: a.network.clone(),
            extractor: a.extractor.clone(),
            discriminator: a.discriminator.clone(),
            backend,
            batch: None,
            img_resolution: a.img_resolution,
            condition_key: cond_key.clone(),
            // parity: plain f32 on every device (no fp16, no TF32)
            precision: TchPrecision::STRICT,
            source: a
                .reference
                .clone()
                .unwrap_or_else(|| PathBuf::from("<generated inputs>")),
        };
        match forward::evaluate(&fo, &ch.inputs) {
            Ok((outs, desc)) => {
                log.ran(format!("{label}: {desc}"));
                results.push((label, outs));
            }
            Err(e) => log.skip(format!("{label}: skipped ({e:#})")),
        }
    }
    results
}

/// Table rows of one check: every pair of runtimes, and each runtime against the reference.
fn compare(
    ch: &Check,
    results: &[(String, Outputs)],
    reference: Option<(&[Array], &Path)>,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (key, ref_key) in &ch.keys {
        let have: Vec<(&String, &Output)> = results
            .iter()
            .filter_map(|(l, o)| find(o, key).map(|v| (l, v)))
            .collect();
        let mut row = |x: &str, y: &str, e: f64, m: f64| {
            rows.push((ch.label.clone(), key.clone(), x.to_string(), y.to_string(), m, e));
        };
        for i in 0..have.len() {
            for j in i + 1..have.len() {
                let (x, y) = (&have[i].1, &have[j].1);
                let (e, m) = if x.1 != y.1 {
                    (f64::INFINITY, f64::INFINITY)
                } else {
                    (norm_err_symmetric(&x.2, &y.2), max_abs(&x.2, &y.2))
                };
                row(have[i].0, have[j].0, e, m);
            }
        }
        if let (Some(rk), Some((r, rp))) = (ref_key, reference) {
            let wv = npz::get(r, rk, rp)?.to_f32();
            for (l, got) in &have {
                let (e, m) = if got.1.iter().product::<usize>() != wv.len() {
                    (f64::INFINITY, f64::INFINITY)
                } else {
                    (norm_err(&got.2, &wv), max_abs(&got.2, &wv))
                };
                row(l, &format!("reference {rk}"), e, m);
            }
        }
    }
    Ok(rows)
}

fn print_table(rows: &[Row], tol: f64) {
    if rows.is_empty() {
        return;
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5);
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(1).max(1);
    let w3 = rows.iter().map(|r| r.3.len()).max().unwrap_or(1).max(1);
    println!(
        "\n{:<w0$}  {:<10}  {:<w2$}  {:<w3$}  {:>12}  {:>12}  result",
        "check", "output", "A", "B", "max abs err", "norm. err"
    );
    for (c, k, x, y, m, e) in rows {
        println!(
            "{c:<w0$}  {k:<10}  {x:<w2$}  {y:<w3$}  {m:>12.3e}  {e:>12.3e}  {}",
            if *e <= tol { "ok" } else { "FAIL" }
        );
    }
}

/// Runs `tiw verify`: prints the runtimes, the skipped ones and the parity table on stdout;
/// fails when an error exceeds the tolerance or nothing could be compared.
pub fn run(a: &VerifyOptions) -> Result<()> {
    let reference = a.reference.as_ref().map(|p| npz::read(p)).transpose()?;
    let (checks, cond_key) = match &a.network {
        Some(net) => (
            network_checks(a, net, reference.as_deref())?,
            a.condition_key.clone(),
        ),
        None => {
            let (c, k) = extractor_check(a, reference.as_deref())?;
            (vec![c], k)
        }
    };
    let target = a
        .network
        .as_ref()
        .or(a.extractor.as_ref())
        .context("--network or --extractor is required")?;
    println!(
        "tiw verify: {} ({}), tolerance {:e}",
        target.display(),
        match &a.reference {
            Some(p) => format!("inputs and PyTorch outputs from {}", p.display()),
            None => format!("{} seeded inputs, seed {}", checks[0].inputs[0].shape[0], a.seed),
        },
        a.tol
    );
    let mut log = Log::default();
    let mut rows = Vec::new();
    let refs = reference.as_deref().zip(a.reference.as_deref());
    for ch in &checks {
        let results = run_check(a, ch, &cond_key, &mut log);
        rows.extend(compare(ch, &results, refs)?);
    }
    for s in &log.skipped {
        println!("  {s}");
    }
    print_table(&rows, a.tol);
    let compared = rows.len();
    let failed = rows.iter().filter(|r| r.5.is_nan() || r.5 > a.tol).count();
    if compared == 0 {
        bail!("nothing to compare: fewer than two runtimes ran and no --reference matched (see the skipped runtimes above)");
    }
    if failed > 0 {
        bail!(
            "{failed} of {compared} comparisons exceed the tolerance {:e}",
            a.tol
        );
    }
    println!("\n{compared} comparisons within {:e}", a.tol);
    Ok(())
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()))
}
