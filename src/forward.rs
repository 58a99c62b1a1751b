//! Evaluating a network on named inputs (`tiw forward`, and `tiw verify` once per runtime):
//! an EDM network (`D`, and `F_x` on libtorch) or the ADM feature extractor with an optional
//! discriminator (`features`, `fe_logits` on libtorch, `dis_logits`, `dis_sigmoid`), on any
//! [`Backend`] through [`Network`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::npz::{self, Array};
use crate::precision::TchPrecision;
use crate::runtime::{Backend, NamedArray, NetKind, Network, Runtime};

/// What to evaluate, where.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// EDM network (exclusive with `extractor`).
    pub network: Option<PathBuf>,
    /// ADM feature extractor.
    pub extractor: Option<PathBuf>,
    /// Discriminator on the extractor's features.
    pub discriminator: Option<PathBuf>,
    /// Runtime and device.
    pub backend: Backend,
    /// At most this many samples per network call (None: all at once).
    pub batch: Option<usize>,
    /// Extractor image resolution, if its layout is ambiguous from the weights.
    pub img_resolution: Option<usize>,
    /// Key of the discriminator's class condition in the inputs (int (N,) or one-hot (N,K)).
    pub condition_key: Option<String>,
    /// libtorch precision policy.
    pub precision: TchPrecision,
    /// Name of the inputs' file, for messages.
    pub source: PathBuf,
}

/// Output arrays of a forward pass: (name, shape, row-major values).
pub type Outputs = Vec<(String, Vec<usize>, Vec<f32>)>;

/// One-hot `[N, classes]` (row-major) from int labels (N,) or the argmax of an (N,K) array.
pub fn one_hot(a: &Array, classes: usize) -> Result<Vec<f32>> {
    let n = a.shape.first().copied().unwrap_or(0);
    let labels: Vec<usize> = match a.shape.len() {
        1 => a.to_f64().iter().map(|&x| x as usize).collect(),
        2 => a
            .to_f32()
            .chunks(a.shape[1].max(1))
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(0, |b, (i, v)| if *v > r[b] { i } else { b })
            })
            .collect(),
        _ => bail!("condition {:?} must be (N,) labels or (N,K) one-hot", a.name),
    };
    let mut v = vec![0f32; n * classes];
    for (i, &l) in labels.iter().enumerate() {
        if l >= classes {
            bail!("condition label {l} out of range for {classes} classes");
        }
        v[i * classes + l] = 1.0;
    }
    Ok(v)
}

fn named(a: &Array) -> NamedArray {
    NamedArray::new(&a.name, a.shape.clone(), a.to_f32())
}

fn push(out: &mut Outputs, name: &str, a: NamedArray) {
    out.push((name.to_string(), a.shape, a.data));
}

/// Evaluates the network(s) of `o` on `inputs` (named like `tiw forward`'s input file);
/// returns the outputs and a description of the runtime.
pub fn evaluate(o: &ForwardOptions, inputs: &[Array]) -> Result<(Outputs, String)> {
    if o.backend.runtime == Runtime::Tch {
        o.precision.apply_global();
    }
    match &o.network {
        Some(net) => eval_network(o, net, inputs),
        None => eval_encoders(o, inputs),
    }
}

/// The inputs of `net` found in `inputs`: the required ones through [`npz::get`] (its
/// message names the file), the optional ones if present.
fn gather(net: &Network, inputs: &[Array], source: &Path) -> Result<Vec<NamedArray>> {
    let mut v = Vec::new();
    for s in net.inputs() {
        if s.optional {
            if let Some(a) = inputs.iter().find(|a| a.name == s.name) {
                v.push(named(a));
            }
        } else {
            v.push(named(npz::get(inputs, &s.name, source)?));
        }
    }
    Ok(v)
}

fn eval_network(o: &ForwardOptions, path: &Path, inputs: &[Array]) -> Result<(Outputs, String)> {
    let mut net = Network::load(NetKind::Denoiser, path, o.backend, None)?;
    let desc = match net.set_precision(&o.precision) {
        Some((dev, fp16)) => format!("tch ({dev:?}, {})", o.precision.describe(fp16, dev)),
        None => net.describe(),
    };
    let ins = gather(&net, inputs, &o.source)?;
    let source = o.source.display().to_string();
    let mut outputs = Outputs::new();
    for a in net.run(ins, &source, o.batch)? {
        let name = a.name.clone();
        push(&mut outputs, &name, a);
    }
    Ok((outputs, desc))
}

fn eval_encoders(o: &ForwardOptions, inputs: &[Array]) -> Result<(Outputs, String)> {
    let fe_path = o
        .extractor
        .as_ref()
        .context("--network or --extractor is required")?;
    let mut fe = Network::load(NetKind::Extractor, fe_path, o.backend, o.img_resolution)?;
    let desc = fe.describe();
    let mut dis = o
        .discriminator
        .as_ref()
        .map(|p| Network::load(NetKind::Discriminator, p, o.backend, None))
        .transpose()?;
    let source = o.source.display().to_string();
    let (x, t) = (
        npz::get(inputs, "x", &o.source)?,
        npz::get(inputs, "t", &o.source)?,
    );
    let mut fe_out = fe.run(vec![named(x), named(t)], &source, o.batch)?.into_iter();
    let feats = fe_out.next().context("the feature extractor gave no output")?;
    let mut outputs = Outputs::new();
    if let Some(d) = dis.as_mut() {
        let mut ins = vec![
            NamedArray::new("features", feats.shape.clone(), feats.data.clone()),
            named(t),
        ];
        let n = feats.shape.first().copied().unwrap_or(0);
        match (&o.condition_key, d.input("condition").map(|s| s.width())) {
            (Some(k), Some(Some(classes))) => ins.push(NamedArray::new(
                "condition",
                vec![n, classes],
                one_hot(npz::get(inputs, k, &o.source)?, classes)?,
            )),
            (Some(_), Some(None)) => bail!("cannot tell the number of classes of the discriminator"),
            (Some(_), None) => bail!("--condition-key given but the discriminator is unconditional"),
            (None, Some(_)) => bail!("the discriminator is class-conditional: pass --condition-key"),
            (None, None) => {}
        }
        let mut d_out = d.run(ins, &source, o.batch)?.into_iter();
        let logits = d_out.next().context("the discriminator gave no output")?;
        // libtorch gives its own sigmoid; for the ONNX graphs it is computed here
        let sig = match d_out.next() {
            Some(s) => s,
            None => NamedArray::new(
                "sigmoid",
                logits.shape.clone(),
                logits.data.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
            ),
        };
        push(&mut outputs, "features", feats);
        outputs.extend(fe_out.map(|a| (a.name, a.shape, a.data)));
        push(&mut outputs, "dis_logits", logits);
        push(&mut outputs, "dis_sigmoid", sig);
    } else {
        push(&mut outputs, "features", feats);
        outputs.extend(fe_out.map(|a| (a.name, a.shape, a.data)));
    }
    Ok((outputs, desc))
}
