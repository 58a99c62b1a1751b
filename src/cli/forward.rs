//! `tiw forward`: run a network on inputs from an `.npz` and write its outputs, for parity
//! checks against PyTorch.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};
use tiw_models::tch_ops::{TchOps, TchTensor};

use tiw::device::{self, DeviceSpec};
use tiw::npz::{self, Array};
use tiw::onnx_export::{self, ExportOpts, OnnxRuntime, WhatGraph};
use tiw::precision::TchPrecision;
use tiw::runtime::{NamedArray, OnnxGraph};

/// Which runtime evaluates the network.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Runtime {
    /// libtorch, eager (CPU or CUDA).
    Tch,
    /// ONNX Runtime (CPU or CUDA execution provider), on an .onnx file or an in-memory export.
    Ort,
    /// tract (pure Rust, CPU).
    Tract,
}

/// Arguments of `tiw forward`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// EDM network: snapshot .pkl, training-state .pt or .safetensors made by `tiw convert`.
    /// Inputs: `x` (N,C,H,W) f32, `sigma` (N,) or 0-d, optional `class_labels` (N,L) and
    /// `augment_labels` (N,9). Outputs: `D` (denoiser) and `F_x` (inner network).
    #[arg(long, conflicts_with = "extractor", required_unless_present = "extractor")]
    pub(crate) network: Option<PathBuf>,
    /// ADM feature extractor (.pt). Inputs `x`, `t`; outputs `features`, `fe_logits`, and with
    /// --discriminator also `dis_logits`, `dis_sigmoid`.
    #[arg(long)]
    pub(crate) extractor: Option<PathBuf>,
    /// Time-dependent discriminator (.pt) applied to the extractor's features.
    #[arg(long, requires = "extractor")]
    pub(crate) discriminator: Option<PathBuf>,
    /// Input arrays (.npz).
    #[arg(long)]
    pub(crate) inputs: PathBuf,
    /// Output arrays (.npz).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Runtime.
    #[arg(long, value_enum, default_value_t = Runtime::Tch)]
    pub(crate) runtime: Runtime,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: DeviceSpec,
    /// Evaluate at most this many samples at a time.
    #[arg(long)]
    pub(crate) batch: Option<usize>,
    /// Extractor image resolution, if its layout is ambiguous from the weights.
    #[arg(long)]
    pub(crate) img_resolution: Option<usize>,
    /// Key of the discriminator's class condition in the inputs (int64 (N,) or one-hot (N,K)).
    #[arg(long)]
    pub(crate) condition_key: Option<String>,
    /// Run a network whose configuration has `use_fp16=True` in f32 (by default it runs in
    /// f16 on tch CUDA, as the official code does; on the CPU it is f32 either way).
    #[arg(long)]
    pub(crate) force_fp32: bool,
    /// Plain f32 convolutions on tch CUDA (by default cuDNN may use TF32, PyTorch's default;
    /// matmuls stay f32 either way).
    #[arg(long)]
    pub(crate) strict_f32: bool,
}

impl Args {
    /// The libtorch precision policy of these flags.
    pub(crate) fn precision(&self) -> TchPrecision {
        TchPrecision {
            force_fp32: self.force_fp32,
            strict_f32: self.strict_f32,
        }
    }
}

/// An npz array as a tch tensor (f32) on `dev`.
pub fn tensor(a: &Array, dev: tch::Device) -> Result<TchTensor> {
    let shape: Vec<i64> = if a.shape.is_empty() {
        vec![1]
    } else {
        a.shape.iter().map(|&d| d as i64).collect()
    };
    Ok(TchTensor(
        Tensor::f_from_slice(&a.to_f32())?
            .f_reshape(shape)?
            .f_to_device(dev)?,
    ))
}

/// Flattened f32 values of a tensor.
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        &t.f_to_kind(Kind::Float)?
            .f_to_device(tch::Device::Cpu)?
            .f_contiguous()?
            .f_view([-1])?,
    )?)
}

fn shape_of(t: &Tensor) -> Vec<usize> {
    t.size().iter().map(|&d| d as usize).collect()
}

/// One-hot `[N, classes]` from int labels (N,) or argmax of a (N,K) array.
pub fn condition(a: &Array, classes: usize, dev: tch::Device) -> Result<TchTensor> {
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
    Ok(TchTensor(
        Tensor::f_from_slice(&v)?
            .f_reshape([n as i64, classes as i64])?
            .f_to_device(dev)?,
    ))
}

/// Splits `0..n` into chunks of `batch`.
pub fn chunks(n: usize, batch: Option<usize>) -> Vec<(i64, i64)> {
    let b = batch.unwrap_or(n).max(1);
    (0..n)
        .step_by(b)
        .map(|s| (s as i64, (b.min(n - s)) as i64))
        .collect()
}

/// Concatenates per-chunk outputs along dim 0.
fn cat(parts: &[Tensor]) -> Result<Tensor> {
    Ok(Tensor::f_cat(parts, 0)?)
}

/// Output arrays of a forward pass: (name, shape, row-major values).
pub(crate) type Outputs = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Runs `tiw forward`.
pub fn run(a: Args) -> Result<()> {
    let inputs = npz::read(&a.inputs)?;
    let (outputs, runtime_desc) = evaluate(&a, &inputs)?;
    npz::write_f32(&a.out, &outputs)?;
    eprintln!(
        "wrote {} ({}) with {runtime_desc}",
        a.out.display(),
        outputs
            .iter()
            .map(|(n, s, _)| format!("{n} {s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Evaluates the network(s) of `a` on `inputs` (named like `tiw forward`'s input file;
/// `a.inputs` only labels error messages) with `a.runtime`; returns the outputs and a
/// description of the runtime. `tiw verify` calls this once per runtime.
pub(crate) fn evaluate(a: &Args, inputs: &[Array]) -> Result<(Outputs, String)> {
    if a.runtime != Runtime::Tch {
        return eval_onnx(a, inputs);
    }
    let dev = device::select(a.device)?;
    let precision = a.precision();
    precision.apply_global();
    let o = TchOps::new(dev);
    let get = |k: &str| npz::get(inputs, k, &a.inputs);
    let opt = |k: &str| inputs.iter().find(|x| x.name == k);
    let mut outputs: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut precision_desc: Option<String> = None;
    let _guard = tch::no_grad_guard();
    if let Some(net_path) = &a.network {
        let mut net = tiw_models::load::edm_denoiser(&o, net_path)?;
        let fp16 = precision.configure(&mut net, dev);
        precision_desc = Some(precision.describe(fp16, dev));
        let cfg = net.cfg.clone();
        let x = get("x")?;
        if x.shape.len() != 4
            || x.shape[1] != cfg.img_channels
            || x.shape[2] != cfg.img_resolution
            || x.shape[3] != cfg.img_resolution
        {
            bail!(
                "{}: x has shape {:?}; this network takes (N, {}, {}, {})",
                a.inputs.display(),
                x.shape,
                cfg.img_channels,
                cfg.img_resolution,
                cfg.img_resolution
            );
        }
        let n = x.shape[0];
        let sigma = get("sigma")?;
        if !(sigma.shape.is_empty() || sigma.shape == [n] || sigma.shape == [1]) {
            bail!(
                "{}: sigma has shape {:?}; expected (N,) or a scalar",
                a.inputs.display(),
                sigma.shape
            );
        }
        let labels = opt("class_labels");
        if let Some(l) = labels {
            if l.shape != [n, cfg.label_dim] {
                bail!(
                    "{}: class_labels has shape {:?}; expected ({n}, {})",
                    a.inputs.display(),
                    l.shape,
                    cfg.label_dim
                );
            }
        }
        let aug = opt("augment_labels");
        if let Some(g) = aug {
            if g.shape != [n, cfg.augment_dim()] {
                bail!(
                    "{}: augment_labels has shape {:?}; expected ({n}, {})",
                    a.inputs.display(),
                    g.shape,
                    cfg.augment_dim()
                );
            }
        }
        let (xt, st) = (tensor(x, dev)?, tensor(sigma, dev)?);
        let lt = labels.map(|l| tensor(l, dev)).transpose()?;
        let at = aug.map(|g| tensor(g, dev)).transpose()?;
        let per_sample_sigma = sigma.shape == [n] && n > 1;
        let (mut d, mut f) = (Vec::new(), Vec::new());
        for (s, len) in chunks(n, a.batch) {
            let nar = |t: &TchTensor| -> Result<TchTensor> { Ok(TchTensor(t.f_narrow(0, s, len)?)) };
            let sig = if per_sample_sigma { nar(&st)? } else { st.clone() };
            let l = lt.as_ref().map(nar).transpose()?;
            let g = at.as_ref().map(nar).transpose()?;
            let out = net.forward(&o, &nar(&xt)?, &sig, l.as_ref(), g.as_ref(), false)?;
            d.push(out.d.0);
            f.push(out.f.0);
        }
        for (name, parts) in [("D", d), ("F_x", f)] {
            let t = cat(&parts)?;
            outputs.push((name.into(), shape_of(&t), values(&t)?));
        }
    } else {
        let fe_path = a
            .extractor
            .as_ref()
            .context("--network or --extractor is required")?;
        let fe = tiw_models::load::encoder(&o, fe_path, a.img_resolution)?;
        let dis = a
            .discriminator
            .as_ref()
            .map(|p| tiw_models::load::encoder(&o, p, None))
            .transpose()?;
        let x = get("x")?;
        let t = get("t")?;
        let n = x.shape.first().copied().unwrap_or(0);
        if x.shape.len() != 4 || x.shape[1] != fe.cfg.in_channels {
            bail!(
                "{}: x has shape {:?}; the extractor takes (N, {}, H, W)",
                a.inputs.display(),
                x.shape,
                fe.cfg.in_channels
            );
        }
        if t.shape != [n] {
            bail!(
                "{}: t has shape {:?}; expected ({n},)",
                a.inputs.display(),
                t.shape
            );
        }
        let cond = match (&a.condition_key, dis.as_ref().and_then(|d| d.cfg.num_class)) {
            (Some(k), Some(classes)) => Some(condition(get(k)?, classes, dev)?),
            (Some(_), None) => bail!("--condition-key given but the discriminator is unconditional"),
            (None, Some(_)) => bail!("the discriminator is class-conditional: pass --condition-key"),
            (None, None) => None,
        };
        let (xt, tt) = (tensor(x, dev)?, tensor(t, dev)?);
        let (mut feats, mut logits, mut dl) = (Vec::new(), Vec::new(), Vec::new());
        for (s, len) in chunks(n, a.batch) {
            let nar = |t: &TchTensor| -> Result<TchTensor> { Ok(TchTensor(t.f_narrow(0, s, len)?)) };
            let (xb, tb) = (nar(&xt)?, nar(&tt)?);
            let out = fe.forward(&o, &xb, &tb, None, true)?;
            if let Some(d) = &dis {
                let c = cond.as_ref().map(nar).transpose()?;
                dl.push(
                    d.forward(&o, &out.features, &tb, c.as_ref(), true)?
                        .logits
                        .expect("head")
                        .0,
                );
            }
            feats.push(out.features.0);
            logits.push(out.logits.expect("head").0);
        }
        let mut push = |name: &str, t: Tensor| -> Result<()> {
            outputs.push((name.into(), shape_of(&t), values(&t)?));
            Ok(())
        };
        push("features", cat(&feats)?)?;
        push("fe_logits", cat(&logits)?)?;
        if dis.is_some() {
            let d = cat(&dl)?;
            push("dis_sigmoid", d.f_sigmoid()?)?;
            push("dis_logits", d)?;
        }
    }
    Ok((
        outputs,
        match precision_desc {
            Some(p) => format!("tch ({dev:?}, {p})"),
            None => format!("tch ({dev:?})"),
        },
    ))
}

/// ONNX bytes of `path`: the file itself if it is `.onnx`, else an in-memory export.
fn onnx_bytes(path: &std::path::Path, what: WhatGraph, img_resolution: Option<usize>) -> Result<Vec<u8>> {
    if path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    {
        return Ok(onnx_export::read_model(path)?.0);
    }
    let opts = ExportOpts {
        what: Some(what),
        opset: 17,
        extractor: None,
        img_resolution,
    };
    let (m, _) = onnx_export::export(path, &opts)?;
    Ok(m.to_bytes()?)
}

fn named(name: &str, shape: Vec<usize>, data: Vec<f32>) -> NamedArray {
    NamedArray {
        name: name.into(),
        shape,
        data,
    }
}

/// Rows `s..s+len` of a row-major array with leading dimension N.
fn rows(a: &NamedArray, s: usize, len: usize) -> NamedArray {
    let per: usize = a.shape[1..].iter().product();
    let mut shape = a.shape.clone();
    shape[0] = len;
    named(&a.name, shape, a.data[s * per..(s + len) * per].to_vec())
}

fn run_chunks(
    g: &mut dyn OnnxGraph,
    ins: &[NamedArray],
    n: usize,
    batch: Option<usize>,
) -> Result<Vec<NamedArray>> {
    let mut outs: Vec<NamedArray> = Vec::new();
    for (s, len) in chunks(n, batch) {
        let part: Vec<NamedArray> = ins.iter().map(|a| rows(a, s as usize, len as usize)).collect();
        let r = g.run(&part)?;
        if outs.is_empty() {
            outs = r;
        } else {
            for (o, x) in outs.iter_mut().zip(r) {
                o.shape[0] += x.shape[0];
                o.data.extend(x.data);
            }
        }
    }
    Ok(outs)
}

fn eval_onnx(a: &Args, inputs: &[Array]) -> Result<(Outputs, String)> {
    let rt = match a.runtime {
        Runtime::Ort => OnnxRuntime::Ort,
        Runtime::Tract => OnnxRuntime::Tract,
        Runtime::Tch => unreachable!(),
    };
    let get = |k: &str| npz::get(inputs, k, &a.inputs);
    let mut outputs: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let runtime_desc;
    if let Some(net) = &a.network {
        let bytes = onnx_bytes(net, WhatGraph::Denoiser, None)?;
        let proto = decode(&bytes)?;
        let mut g = onnx_export::load(&bytes, rt, a.device)?;
        runtime_desc = g.describe();
        let names = g.input_names();
        let x = get("x")?;
        if x.shape.len() != 4 {
            bail!(
                "{}: x has shape {:?}; expected (N, C, H, W)",
                a.inputs.display(),
                x.shape
            );
        }
        let n = x.shape[0];
        let sigma = get("sigma")?;
        let sv = sigma.to_f32();
        let sigma_n = match sv.len() {
            1 => vec![sv[0]; n],
            l if l == n => sv,
            _ => bail!(
                "{}: sigma has shape {:?}; expected (N,) or a scalar",
                a.inputs.display(),
                sigma.shape
            ),
        };
        let mut ins = vec![
            named("x", x.shape.clone(), x.to_f32()),
            named("sigma", vec![n], sigma_n),
        ];
        for (key, graph_name) in [
            ("class_labels", "class_labels"),
            ("augment_labels", "augment_labels"),
        ] {
            if names.iter().any(|nm| nm == graph_name) {
                match inputs.iter().find(|i| i.name == key) {
                    Some(arr) => ins.push(named(graph_name, arr.shape.clone(), arr.to_f32())),
                    None => {
                        // the official net treats missing labels as zeros (class) / absent (augment, no bias)
                        let width = input_width(&proto, graph_name)?;
                        ins.push(named(graph_name, vec![n, width], vec![0.0; n * width]));
                    }
                }
            }
        }
        for o in run_chunks(g.as_mut(), &ins, n, a.batch)? {
            outputs.push((o.name, o.shape, o.data));
        }
    } else {
        let fe = a
            .extractor
            .as_ref()
            .context("--network or --extractor is required")?;
        let mut g = onnx_export::load(
            &onnx_bytes(fe, WhatGraph::Extractor, a.img_resolution)?,
            rt,
            a.device,
        )?;
        runtime_desc = g.describe();
        let x = get("x")?;
        let t = get("t")?;
        let n = x.shape.first().copied().unwrap_or(0);
        let ins = vec![
            named("x", x.shape.clone(), x.to_f32()),
            named("t", t.shape.clone(), t.to_f32()),
        ];
        let feats = run_chunks(g.as_mut(), &ins, n, a.batch)?.remove(0);
        if let Some(d) = &a.discriminator {
            let dbytes = onnx_bytes(d, WhatGraph::Discriminator, None)?;
            let dproto = decode(&dbytes)?;
            let mut dg = onnx_export::load(&dbytes, rt, a.device)?;
            let mut dins = vec![
                named("features", feats.shape.clone(), feats.data.clone()),
                named("t", t.shape.clone(), t.to_f32()),
            ];
            if dg.input_names().iter().any(|x| x == "condition") {
                let key = a
                    .condition_key
                    .as_ref()
                    .context("the discriminator is class-conditional: pass --condition-key")?;
                let width = input_width(&dproto, "condition")?;
                let c = condition(get(key)?, width, tch::Device::Cpu)?;
                dins.push(named("condition", vec![n, width], values(&c)?));
            }
            let logits = run_chunks(dg.as_mut(), &dins, n, a.batch)?.remove(0);
            let sig: Vec<f32> = logits.data.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
            outputs.push(("features".into(), feats.shape, feats.data));
            outputs.push(("dis_logits".into(), logits.shape.clone(), logits.data));
            outputs.push(("dis_sigmoid".into(), logits.shape, sig));
        } else {
            outputs.push(("features".into(), feats.shape, feats.data));
        }
    }
    Ok((outputs, runtime_desc))
}

fn decode(bytes: &[u8]) -> Result<tract_onnx::pb::ModelProto> {
    prost::Message::decode(bytes).map_err(|e| anyhow::anyhow!("invalid ONNX model: {e}"))
}

/// Width (second dimension) of a graph input.
fn input_width(m: &tract_onnx::pb::ModelProto, input: &str) -> Result<usize> {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value, type_proto};
    let g = m.graph.as_ref().context("model without graph")?;
    let v = g
        .input
        .iter()
        .find(|i| i.name == input)
        .with_context(|| format!("graph has no input {input}"))?;
    if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        if let Some(Value::DimValue(w)) = t
            .shape
            .as_ref()
            .and_then(|s| s.dim.get(1))
            .and_then(|d| d.value.clone())
        {
            return Ok(w as usize);
        }
    }
    bail!("cannot tell the width of graph input {input}")
}
