//! Graph-emitting implementation of [`Ops`]: running a model's forward code with
//! [`OnnxOps`] records an ONNX graph (opset 17–21) instead of computing. Parameters become
//! named initializers; every op maps to standard operators that ONNX Runtime and tract agree
//! on (GroupNorm as Reshape + InstanceNormalization + affine, attention as MatMul/Softmax).
//! Protobuf messages are the prost types that tract-onnx exposes.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use tiw_converters::{Buffer, DType, TensorEntry};

use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto,
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::backend::Ops;
use crate::onnx_model::{Initializer, OnnxModel};
use crate::{ModelError, Result};

/// A value in the graph being built (its name).
#[derive(Debug, Clone)]
pub struct OnnxValue(pub Rc<str>);

/// A dimension of a graph input/output: fixed or symbolic (e.g. the batch `N`).
#[derive(Debug, Clone)]
pub enum Dim {
    /// Known size.
    Fixed(i64),
    /// Symbolic size.
    Sym(String),
}

#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<Initializer>,
    inputs: Vec<ValueInfoProto>,
    counter: usize,
    /// Values whose element type is f16 (all others are f32, or integer shapes/indices).
    half: std::collections::HashSet<Rc<str>>,
    /// f16 casts of f32 values already emitted (source name → cast), so a weight shared by
    /// several layers is cast once.
    half_casts: std::collections::HashMap<Rc<str>, Rc<str>>,
}

/// Records ONNX nodes.
pub struct OnnxOps {
    g: RefCell<Graph>,
    opset: i64,
}

fn attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}
fn attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}
fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n),
                Dim::Sym(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

impl OnnxOps {
    /// A recorder targeting `opset` (17–21).
    pub fn new(opset: i64) -> Result<Self> {
        if !(17..=21).contains(&opset) {
            return Err(ModelError::Config(format!(
                "opset {opset}: supported are 17 to 21"
            )));
        }
        Ok(OnnxOps {
            g: RefCell::new(Graph::default()),
            opset,
        })
    }

    /// The target opset.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// Declares a float graph input.
    pub fn input(&self, name: &str, dims: &[Dim]) -> OnnxValue {
        self.g.borrow_mut().inputs.push(value_info(name, dims));
        OnnxValue(name.into())
    }

    fn fresh(&self, hint: &str) -> Rc<str> {
        let mut g = self.g.borrow_mut();
        g.counter += 1;
        format!("{hint}_{}", g.counter).into()
    }

    fn node(&self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> OnnxValue {
        let out = self.fresh(op);
        // the element type follows the data inputs: f16 in, f16 out (Shape/ArgMin give
        // integers; Cast decides itself)
        if !matches!(op, "Shape" | "ArgMin" | "Cast") {
            let mut g = self.g.borrow_mut();
            if inputs.iter().any(|i| g.half.contains(*i)) {
                g.half.insert(out.clone());
            }
        }
        let n = NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: format!("n{}", out),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        };
        self.g.borrow_mut().nodes.push(n);
        OnnxValue(out)
    }

    fn init(&self, name: Rc<str>, dt: DataType, raw: Vec<u8>, shape: &[i64]) -> OnnxValue {
        let t = TensorProto {
            dims: shape.to_vec(),
            data_type: dt as i32,
            name: name.to_string(),
            raw_data: raw,
            ..Default::default()
        };
        self.g.borrow_mut().initializers.push(Initializer::Inline(t));
        OnnxValue(name)
    }

    fn f32_init(&self, name: Option<&str>, data: &[f32], shape: &[usize]) -> OnnxValue {
        let name: Rc<str> = match name {
            Some(n) => n.into(),
            None => self.fresh("const"),
        };
        let raw: Vec<u8> = bytemuck::cast_slice::<f32, u8>(data).to_vec();
        let s: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        self.init(name, DataType::Float, raw, &s)
    }

    fn i64_init(&self, data: &[i64]) -> OnnxValue {
        let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let name = self.fresh("shape");
        self.init(name, DataType::Int64, raw, &[data.len() as i64])
    }

    fn scalar(&self, c: f64) -> OnnxValue {
        self.f32_init(None, &[c as f32], &[])
    }

    /// Whether `x` holds f16 values.
    fn is_half(&self, x: &OnnxValue) -> bool {
        self.g.borrow().half.contains(&x.0)
    }

    /// The scalar `c` in the element type of `x`.
    fn scalar_like(&self, c: f64, x: &OnnxValue) -> OnnxValue {
        if self.is_half(x) {
            let raw = half::f16::from_f64(c).to_bits().to_le_bytes().to_vec();
            let name = self.fresh("const");
            let v = self.init(name, DataType::Float16, raw, &[]);
            self.g.borrow_mut().half.insert(v.0.clone());
            v
        } else {
            self.scalar(c)
        }
    }

    /// `Cast(x, to)`, marking the element type.
    fn cast(&self, x: &OnnxValue, half: bool) -> OnnxValue {
        let to = if half { DataType::Float16 } else { DataType::Float };
        let v = self.node("Cast", &[&x.0], vec![attr_i("to", to as i64)]);
        if half {
            self.g.borrow_mut().half.insert(v.0.clone());
        }
        v
    }

    /// `Cast(x, f64)`: operands of the exact f32 products and quotients.
    fn widen(&self, x: &OnnxValue) -> OnnxValue {
        self.node("Cast", &[&x.0], vec![attr_i("to", DataType::Double as i64)])
    }

    /// A layer's weight `w` in the element type of its input `x` (EDM casts weights per call).
    /// f32 initializers cast to f16 only there are stored as f16 by [`OnnxOps::finish`].
    fn weight_like(&self, w: &OnnxValue, x: &OnnxValue) -> OnnxValue {
        if !self.is_half(x) || self.is_half(w) {
            return w.clone();
        }
        if let Some(c) = self.g.borrow().half_casts.get(&w.0) {
            return OnnxValue(c.clone());
        }
        let c = self.cast(w, true);
        self.g.borrow_mut().half_casts.insert(w.0.clone(), c.0.clone());
        c
    }

    fn unary(&self, op: &str, x: &OnnxValue) -> Result<OnnxValue> {
        Ok(self.node(op, &[&x.0], vec![]))
    }

    fn binary(&self, op: &str, x: &OnnxValue, y: &OnnxValue) -> Result<OnnxValue> {
        Ok(self.node(op, &[&x.0, &y.0], vec![]))
    }

    /// Finishes the graph with the given outputs and `metadata_props`.
    pub fn finish(
        self,
        outputs: &[(&str, &OnnxValue, Vec<Dim>)],
        metadata: &[(String, String)],
    ) -> OnnxModel {
        let mut g = self.g.into_inner();
        store_half_initializers(&mut g);
        let mut out_infos = Vec::new();
        for (name, v, dims) in outputs {
            g.nodes.push(NodeProto {
                input: vec![v.0.to_string()],
                output: vec![name.to_string()],
                name: format!("output_{name}"),
                op_type: "Identity".into(),
                ..Default::default()
            });
            out_infos.push(value_info(name, dims));
        }
        let graph = GraphProto {
            node: g.nodes,
            name: "tiw".into(),
            input: g.inputs,
            output: out_infos,
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: if self.opset >= 21 { 10 } else { 8 },
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            producer_name: "tiw".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: None,
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            ..Default::default()
        };
        OnnxModel::new(model, graph, g.initializers)
    }

    fn reduce_mean(&self, x: &OnnxValue, axes: &[i64]) -> OnnxValue {
        if self.opset >= 18 {
            let a = self.i64_init(axes);
            self.node("ReduceMean", &[&x.0, &a.0], vec![attr_i("keepdims", 1)])
        } else {
            self.node(
                "ReduceMean",
                &[&x.0],
                vec![attr_ints("axes", axes), attr_i("keepdims", 1)],
            )
        }
    }
}

/// f32 initializers whose every use is a Cast to f16 (the weights of a half-precision
/// network) are stored as f16 and those casts become Identity: the file holds f16 weights.
fn store_half_initializers(g: &mut Graph) {
    use std::collections::{HashMap, HashSet};
    let names: HashSet<String> = g.initializers.iter().map(|i| i.name().to_string()).collect();
    // per initializer: (uses, uses that are f16 casts)
    let mut uses: HashMap<&str, (usize, usize)> = HashMap::new();
    for n in &g.nodes {
        let to_half = n.op_type == "Cast"
            && n.attribute
                .iter()
                .any(|a| a.name == "to" && a.i == DataType::Float16 as i64);
        for i in &n.input {
            if names.contains(i) {
                let u = uses.entry(i.as_str()).or_default();
                u.0 += 1;
                u.1 += usize::from(to_half);
            }
        }
    }
    let convert: HashSet<String> = uses
        .into_iter()
        .filter(|(_, (all, half))| *all > 0 && all == half)
        .map(|(n, _)| n.to_string())
        .collect();
    if convert.is_empty() {
        return;
    }
    for init in &mut g.initializers {
        if convert.contains(init.name()) {
            init.store_as_f16();
        }
    }
    for n in &mut g.nodes {
        if n.op_type == "Cast" && n.input.first().is_some_and(|i| convert.contains(i)) {
            n.op_type = "Identity".into();
            n.attribute.clear();
        }
    }
}

/// Encodes a model to protobuf bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(model)
}

/// Parameter count of a model's float initializers whose names do not start with `const_`
/// or `shape_` (i.e. the network's own tensors).
pub fn parameter_count(model: &ModelProto) -> usize {
    model
        .graph
        .as_ref()
        .map(|g| {
            g.initializer
                .iter()
                .filter(|t| !t.name.starts_with("const_") && !t.name.starts_with("shape_"))
                .map(|t| t.dims.iter().product::<i64>() as usize)
                .sum()
        })
        .unwrap_or(0)
}

impl Ops for OnnxOps {
    type T = OnnxValue;

    fn constant(&self, data: &[f32], shape: &[usize]) -> Result<OnnxValue> {
        Ok(self.f32_init(None, data, shape))
    }
    fn parameter(&self, name: &str, data: &[f32], shape: &[usize]) -> Result<OnnxValue> {
        Ok(self.f32_init(Some(name), data, shape))
    }
    /// Records a reference: the values are converted and written by [`OnnxModel::write_to`].
    fn stored_parameter(&self, buf: &Arc<Buffer>, e: &TensorEntry) -> Result<OnnxValue> {
        if !matches!(e.dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
            return Err(ModelError::Config(format!(
                "{}: {} weights cannot be used as f32 parameters",
                e.name, e.dtype
            )));
        }
        let header = TensorProto {
            dims: e.shape.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            name: e.name.clone(),
            ..Default::default()
        };
        self.g.borrow_mut().initializers.push(Initializer::Stored {
            header,
            buf: buf.clone(),
            entry: e.clone(),
        });
        Ok(OnnxValue(e.name.as_str().into()))
    }
    fn buffer_value(&self, t: &OnnxValue) -> Result<OnnxValue> {
        Ok(t.clone())
    }
    fn reshape(&self, x: &OnnxValue, shape: &[i64]) -> Result<OnnxValue> {
        let s = self.i64_init(shape);
        Ok(self.node("Reshape", &[&x.0, &s.0], vec![]))
    }
    fn permute(&self, x: &OnnxValue, dims: &[i64]) -> Result<OnnxValue> {
        Ok(self.node("Transpose", &[&x.0], vec![attr_ints("perm", dims)]))
    }
    fn concat(&self, xs: &[&OnnxValue], dim: i64) -> Result<OnnxValue> {
        let names: Vec<&str> = xs.iter().map(|x| &*x.0).collect();
        Ok(self.node("Concat", &names, vec![attr_i("axis", dim)]))
    }
    fn narrow(&self, x: &OnnxValue, dim: i64, start: i64, len: i64) -> Result<OnnxValue> {
        let (s, e, a) = (
            self.i64_init(&[start]),
            self.i64_init(&[start + len]),
            self.i64_init(&[dim]),
        );
        Ok(self.node("Slice", &[&x.0, &s.0, &e.0, &a.0], vec![]))
    }
    fn add(&self, x: &OnnxValue, y: &OnnxValue) -> Result<OnnxValue> {
        self.binary("Add", x, y)
    }
    fn sub(&self, x: &OnnxValue, y: &OnnxValue) -> Result<OnnxValue> {
        self.binary("Sub", x, y)
    }
    fn mul(&self, x: &OnnxValue, y: &OnnxValue) -> Result<OnnxValue> {
        self.binary("Mul", x, y)
    }
    /// f32 operands: `Cast(Cast(x, f64) · Cast(y, f64), f32)`. The f64 product of two f32
    /// values is exact, so the result is the correctly rounded f32 product (PyTorch's), and
    /// the multiply is fed by a `Cast`, not by another `Mul` that an optimiser could fold
    /// constants into. f16 operands: a plain `Mul`.
    fn mul_exact(&self, x: &OnnxValue, y: &OnnxValue) -> Result<OnnxValue> {
        if self.is_half(x) || self.is_half(y) {
            return self.mul(x, y);
        }
        let product = self.binary("Mul", &self.widen(x), &self.widen(y))?;
        Ok(self.node("Cast", &[&product.0], vec![attr_i("to", DataType::Float as i64)]))
    }
    fn div(&self, x: &OnnxValue, y: &OnnxValue) -> Result<OnnxValue> {
        self.binary("Div", x, y)
    }
    fn add_scalar(&self, x: &OnnxValue, c: f64) -> Result<OnnxValue> {
        let s = self.scalar_like(c, x);
        self.binary("Add", x, &s)
    }
    fn mul_scalar(&self, x: &OnnxValue, c: f64) -> Result<OnnxValue> {
        let s = self.scalar_like(c, x);
        self.binary("Mul", x, &s)
    }
    fn to_f16(&self, x: &OnnxValue) -> Result<OnnxValue> {
        if self.is_half(x) {
            return Ok(x.clone());
        }
        Ok(self.cast(x, true))
    }
    fn to_f32(&self, x: &OnnxValue) -> Result<OnnxValue> {
        if !self.is_half(x) {
            return Ok(x.clone());
        }
        Ok(self.cast(x, false))
    }
    fn cast_like(&self, x: &OnnxValue, like: &OnnxValue) -> Result<OnnxValue> {
        match (self.is_half(x), self.is_half(like)) {
            (false, true) => Ok(self.cast(x, true)),
            (true, false) => Ok(self.cast(x, false)),
            _ => Ok(x.clone()),
        }
    }
    /// f16 operands: q and k scaled in f16, logits and softmax in f32, weights back to f16
    /// for the product with v (EDM's mixed attention); f32: the MatMul/Softmax composition.
    fn attention(&self, q: &OnnxValue, k: &OnnxValue, v: &OnnxValue, qs: f64, ks: f64) -> Result<OnnxValue> {
        if !self.is_half(q) {
            return crate::backend::attention_composed(self, q, k, v, qs, ks);
        }
        let scaled = |x: &OnnxValue, s: f64| -> Result<OnnxValue> {
            let x = if s == 1.0 {
                x.clone()
            } else {
                self.mul_scalar(x, s)?
            };
            Ok(self.cast(&x, false))
        };
        let w = self.matmul(&self.permute(&scaled(q, qs)?, &[0, 2, 1])?, &scaled(k, ks)?)?;
        let w = self.cast(&self.softmax(&w, 2)?, true);
        self.matmul(v, &self.permute(&w, &[0, 2, 1])?)
    }
    /// f32 `x`: `Cast(Cast(x, f64) / f64(f32(c)), f32)`, the correctly rounded f32 quotient
    /// (an f64 quotient of f32 operands rounds to the same f32); f16 `x`: a plain `Div`.
    fn div_scalar(&self, x: &OnnxValue, c: f64) -> Result<OnnxValue> {
        if self.is_half(x) {
            return self.binary("Div", x, &self.scalar_like(c, x));
        }
        let divisor = f64::from(c as f32).to_le_bytes().to_vec();
        let divisor = self.init(self.fresh("const"), DataType::Double, divisor, &[]);
        let quotient = self.binary("Div", &self.widen(x), &divisor)?;
        Ok(self.node("Cast", &[&quotient.0], vec![attr_i("to", DataType::Float as i64)]))
    }
    fn rdiv_scalar(&self, c: f64, x: &OnnxValue) -> Result<OnnxValue> {
        let r = self.unary("Reciprocal", x)?;
        self.mul_scalar(&r, c)
    }
    fn exp(&self, x: &OnnxValue) -> Result<OnnxValue> {
        self.unary("Exp", x)
    }
    fn log(&self, x: &OnnxValue) -> Result<OnnxValue> {
        self.unary("Log", x)
    }
    fn sqrt(&self, x: &OnnxValue) -> Result<OnnxValue> {
        self.unary("Sqrt", x)
    }
    fn square(&self, x: &OnnxValue) -> Result<OnnxValue> {
        self.binary("Mul", x, x)
    }
    fn cos(&self, x: &OnnxValue) -> Result<OnnxValue> {
        self.unary("Cos", x)
    }
    fn sin(&self, x: &OnnxValue) -> Result<OnnxValue> {
        self.unary("Sin", x)
    }
    fn abs(&self, x: &OnnxValue) -> Result<OnnxValue> {
        self.unary("Abs", x)
    }
    fn silu(&self, x: &OnnxValue) -> Result<OnnxValue> {
        let s = self.unary("Sigmoid", x)?;
        self.binary("Mul", x, &s)
    }
    fn sigmoid(&self, x: &OnnxValue) -> Result<OnnxValue> {
        self.unary("Sigmoid", x)
    }
    fn clamp(&self, x: &OnnxValue, lo: f64, hi: f64) -> Result<OnnxValue> {
        let (l, h) = (self.scalar_like(lo, x), self.scalar_like(hi, x));
        Ok(self.node("Clip", &[&x.0, &l.0, &h.0], vec![]))
    }
    fn softmax(&self, x: &OnnxValue, dim: i64) -> Result<OnnxValue> {
        Ok(self.node("Softmax", &[&x.0], vec![attr_i("axis", dim)]))
    }
    fn mean_keepdim(&self, x: &OnnxValue, dims: &[i64]) -> Result<OnnxValue> {
        Ok(self.reduce_mean(x, dims))
    }
    fn argmin(&self, x: &OnnxValue, dim: i64) -> Result<OnnxValue> {
        let i = self.node(
            "ArgMin",
            &[&x.0],
            vec![attr_i("axis", dim), attr_i("keepdims", 0)],
        );
        Ok(self.node("Cast", &[&i.0], vec![attr_i("to", DataType::Float as i64)]))
    }
    fn gather_1d(&self, table: &OnnxValue, idx: &OnnxValue) -> Result<OnnxValue> {
        let i = self.node("Cast", &[&idx.0], vec![attr_i("to", DataType::Int64 as i64)]);
        Ok(self.node("Gather", &[&table.0, &i.0], vec![attr_i("axis", 0)]))
    }
    fn matmul(&self, a: &OnnxValue, b: &OnnxValue) -> Result<OnnxValue> {
        self.binary("MatMul", a, b)
    }
    fn linear(&self, x: &OnnxValue, w: &OnnxValue, b: Option<&OnnxValue>) -> Result<OnnxValue> {
        let w = self.weight_like(w, x);
        let b = b.map(|b| self.weight_like(b, x));
        let mut ins: Vec<&str> = vec![&x.0, &w.0];
        if let Some(b) = &b {
            ins.push(&b.0);
        }
        Ok(self.node("Gemm", &ins, vec![attr_i("transB", 1)]))
    }
    fn conv2d(
        &self,
        x: &OnnxValue,
        w: &OnnxValue,
        b: Option<&OnnxValue>,
        stride: i64,
        padding: i64,
        groups: i64,
    ) -> Result<OnnxValue> {
        let w = self.weight_like(w, x);
        let b = b.map(|b| self.weight_like(b, x));
        let mut ins: Vec<&str> = vec![&x.0, &w.0];
        if let Some(b) = &b {
            ins.push(&b.0);
        }
        Ok(self.node(
            "Conv",
            &ins,
            vec![
                attr_ints("strides", &[stride, stride]),
                attr_ints("pads", &[padding; 4]),
                attr_i("group", groups),
            ],
        ))
    }
    fn conv_transpose2d(
        &self,
        x: &OnnxValue,
        w: &OnnxValue,
        stride: i64,
        padding: i64,
        groups: i64,
    ) -> Result<OnnxValue> {
        let w = self.weight_like(w, x);
        Ok(self.node(
            "ConvTranspose",
            &[&x.0, &w.0],
            vec![
                attr_ints("strides", &[stride, stride]),
                attr_ints("pads", &[padding; 4]),
                attr_i("group", groups),
            ],
        ))
    }
    fn group_norm(
        &self,
        x: &OnnxValue,
        groups: i64,
        w: &OnnxValue,
        b: &OnnxValue,
        eps: f64,
    ) -> Result<OnnxValue> {
        // f16 activations: statistics and affine in f32, the result rounded to f16 once
        if self.is_half(x) {
            let y = self.group_norm(&self.cast(x, false), groups, w, b, eps)?;
            return Ok(self.cast(&y, true));
        }
        // [N, C, *] → [N, C, R] → [N, G, C/G·R] → InstanceNormalization (unit scale, zero
        // bias) → [N, C, R] → per-channel affine → [N, C, *]. (Reshape's 0 copies a dim.)
        let full = self.node("Shape", &[&x.0], vec![]);
        let x3 = self.reshape(x, &[0, 0, -1])?;
        let flat = self.node("Shape", &[&x3.0], vec![]);
        let grouped = self.reshape(&x3, &[0, groups, -1])?;
        let ones = self.f32_init(None, &vec![1.0; groups as usize], &[groups as usize]);
        let zeros = self.f32_init(None, &vec![0.0; groups as usize], &[groups as usize]);
        let n = self.node(
            "InstanceNormalization",
            &[&grouped.0, &ones.0, &zeros.0],
            vec![attr_f("epsilon", eps as f32)],
        );
        let y = self.node("Reshape", &[&n.0, &flat.0], vec![]);
        let y = self.binary("Mul", &y, &self.reshape(w, &[-1, 1])?)?;
        let y = self.binary("Add", &y, &self.reshape(b, &[-1, 1])?)?;
        Ok(self.node("Reshape", &[&y.0, &full.0], vec![]))
    }
    fn avg_pool2d(&self, x: &OnnxValue, k: i64) -> Result<OnnxValue> {
        Ok(self.node(
            "AveragePool",
            &[&x.0],
            vec![attr_ints("kernel_shape", &[k, k]), attr_ints("strides", &[k, k])],
        ))
    }
    fn dropout(&self, x: &OnnxValue, _p: f64, _train: bool) -> Result<OnnxValue> {
        Ok(x.clone())
    }
    /// Identity unless asked to draw: exported graphs are for inference and record no
    /// random numbers.
    fn label_dropout(&self, labels: &OnnxValue, _x: &OnnxValue, p: f64, train: bool) -> Result<OnnxValue> {
        if train && p > 0.0 {
            return Err(ModelError::Config(
                "label_dropout draws random numbers during training; an ONNX graph records inference only"
                    .into(),
            ));
        }
        Ok(labels.clone())
    }
    fn relu(&self, x: &OnnxValue) -> Result<OnnxValue> {
        self.unary("Relu", x)
    }
    fn conv2d_hw(
        &self,
        x: &OnnxValue,
        w: &OnnxValue,
        b: Option<&OnnxValue>,
        stride: [i64; 2],
        padding: [i64; 2],
    ) -> Result<OnnxValue> {
        let mut ins: Vec<&str> = vec![&x.0, &w.0];
        if let Some(b) = b {
            ins.push(&b.0);
        }
        // ONNX pads: [h_begin, w_begin, h_end, w_end]
        let pads = [padding[0], padding[1], padding[0], padding[1]];
        Ok(self.node(
            "Conv",
            &ins,
            vec![
                attr_ints("strides", &stride),
                attr_ints("pads", &pads),
                attr_i("group", 1),
            ],
        ))
    }
    fn max_pool2d(&self, x: &OnnxValue, k: i64, stride: i64, padding: i64) -> Result<OnnxValue> {
        Ok(self.node(
            "MaxPool",
            &[&x.0],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[stride, stride]),
                attr_ints("pads", &[padding; 4]),
            ],
        ))
    }
    fn avg_pool2d_ext(
        &self,
        x: &OnnxValue,
        k: i64,
        stride: i64,
        padding: i64,
        count_include_pad: bool,
    ) -> Result<OnnxValue> {
        Ok(self.node(
            "AveragePool",
            &[&x.0],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[stride, stride]),
                attr_ints("pads", &[padding; 4]),
                attr_i("count_include_pad", count_include_pad as i64),
            ],
        ))
    }
}
