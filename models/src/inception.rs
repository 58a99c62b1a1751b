//! The Inception-v3 FID feature network (the TF graph `inception-2015-12-05` up to `pool_3`),
//! as used by EDM's `fid.py`, torch-fidelity (`inception-v3-compat`) and pytorch-fid
//! (`FIDInceptionA/C/E_1/E_2`).
//!
//! Input: `x [N, 3, 299, 299]` f32, already resized and normalised to `(v − 128)/128` (see
//! `tiw::fid::preprocess`). Output: `pool3 [N, 2048]`, the global average of `Mixed_7c`.
//!
//! Architecture (SPEC §7): every `BasicConv2d` is conv (no bias) → eval BatchNorm
//! (ε = 10⁻³) → ReLU. Stem `Conv2d_1a_3x3` (3×3/2, 32) → `Conv2d_2a_3x3` (3×3, 32) →
//! `Conv2d_2b_3x3` (3×3 pad 1, 64) → max pool 3/2 → `Conv2d_3b_1x1` (80) → `Conv2d_4a_3x3`
//! (3×3, 192) → max pool 3/2 → `Mixed_5b/5c/5d` (InceptionA, pool features 32/64/64) →
//! `Mixed_6a` (InceptionB) → `Mixed_6b..6e` (InceptionC, 7×7 channels 128/160/160/192) →
//! `Mixed_7a` (InceptionD) → `Mixed_7b` (InceptionE) → `Mixed_7c` (InceptionE with a **max**
//! pool in its pool branch) → global average. The TF quirks: the pool branches of A, C and
//! `Mixed_7b` use a 3×3/1 pad-1 average pool that divides by the number of cells inside the
//! image (`count_include_pad = false`); `Mixed_7c` uses a 3×3/1 pad-1 max pool.
//!
//! Weights: the state dict of torch-fidelity / pytorch-fid (`pt_inception-2015-12-05-*.pth`):
//! `<block>.conv.weight` (OIHW) and `<block>.bn.{weight,bias,running_mean,running_var}` for
//! the 94 convolutions, plus the unused `fc.{weight,bias}`. pytorch-fid's `InceptionV3`
//! wrapper names (`blocks.0.0.…`, `blocks.2.3.…`) are accepted too. BatchNorm is folded into
//! the convolution at load time (in f64, rounded once to f32):
//! `s = γ/√(var + ε)`, `w' = w·s` (per output channel), `b' = β − mean·s`.

use tiw_converters::TensorStore;

use crate::backend::Ops;
use crate::onnx_ops::{Dim, OnnxOps};
use crate::vb::to_f32;
use crate::{ModelError, Result};

/// Feature dimension of `pool3`.
pub const FEATURE_DIM: usize = 2048;
/// Input resolution of the network.
pub const INPUT_SIZE: usize = 299;
/// BatchNorm epsilon of the TF graph.
pub const BN_EPS: f64 = 1e-3;
/// Classes of the TF graph's classifier `fc` (1008: ImageNet's 1000 plus 8 unused).
pub const LOGITS_DIM: usize = 1008;

/// The classifier weight `fc.weight [1008, 2048]` (row-major f32) of a FID Inception state
/// dict, for torch-fidelity's `logits_unbiased = pool3 · fc.weightᵀ` (no bias; the
/// Inception Score's input). pytorch-fid's FID wrapper has no `fc`: that is an error naming it.
pub fn fc_weight(store: &TensorStore) -> Result<Vec<f32>> {
    let e = store.get("fc.weight").ok_or_else(|| {
        ModelError::MissingParam(
            "fc.weight (the Inception classifier, needed for logits; pytorch-fid's FID-only wrapper \
             has none: use the torch-fidelity/pytorch-fid pt_inception-2015-12-05 state dict)"
                .into(),
        )
    })?;
    let want = [LOGITS_DIM, FEATURE_DIM];
    if e.shape != want {
        return Err(ModelError::ParamShape {
            name: "fc.weight".into(),
            got: e.shape.clone(),
            want: want.to_vec(),
        });
    }
    to_f32(e.dtype, &store.bytes(e)).map_err(|err| ModelError::Config(format!("fc.weight: {err}")))
}

/// One `BasicConv2d` with BatchNorm folded in: `relu(conv(x, w', b'))`.
#[derive(Debug, Clone)]
pub struct BasicConv<T> {
    w: T,
    b: T,
    stride: [i64; 2],
    padding: [i64; 2],
}

impl<T: Clone> BasicConv<T> {
    fn forward<O: Ops<T = T>>(&self, o: &O, x: &T) -> Result<T> {
        let y = o.conv2d_hw(x, &self.w, Some(&self.b), self.stride, self.padding)?;
        o.relu(&y)
    }
}

/// Reads tensors of a state dict, normalising pytorch-fid wrapper names and recording use.
struct Loader<'a, O: Ops> {
    ops: &'a O,
    store: &'a TensorStore,
    /// canonical name → store name
    names: std::collections::HashMap<String, String>,
    used: std::cell::RefCell<std::collections::HashSet<String>>,
}

/// Canonical (torchvision / torch-fidelity) name of a pytorch-fid `InceptionV3` wrapper key.
pub fn canonical_name(name: &str) -> String {
    const MAP: [(&str, &str); 16] = [
        ("blocks.0.0.", "Conv2d_1a_3x3."),
        ("blocks.0.1.", "Conv2d_2a_3x3."),
        ("blocks.0.2.", "Conv2d_2b_3x3."),
        ("blocks.1.0.", "Conv2d_3b_1x1."),
        ("blocks.1.1.", "Conv2d_4a_3x3."),
        ("blocks.2.0.", "Mixed_5b."),
        ("blocks.2.1.", "Mixed_5c."),
        ("blocks.2.2.", "Mixed_5d."),
        ("blocks.2.3.", "Mixed_6a."),
        ("blocks.2.4.", "Mixed_6b."),
        ("blocks.2.5.", "Mixed_6c."),
        ("blocks.2.6.", "Mixed_6d."),
        ("blocks.2.7.", "Mixed_6e."),
        ("blocks.3.0.", "Mixed_7a."),
        ("blocks.3.1.", "Mixed_7b."),
        ("blocks.3.2.", "Mixed_7c."),
    ];
    for (from, to) in MAP {
        if let Some(rest) = name.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    name.to_string()
}

impl<'a, O: Ops> Loader<'a, O> {
    fn new(ops: &'a O, store: &'a TensorStore) -> Self {
        let names = store
            .entries()
            .iter()
            .map(|e| (canonical_name(&e.name), e.name.clone()))
            .collect();
        Loader {
            ops,
            store,
            names,
            used: Default::default(),
        }
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let key = self
            .names
            .get(name)
            .ok_or_else(|| ModelError::MissingParam(name.to_string()))?;
        let e = self
            .store
            .get(key)
            .ok_or_else(|| ModelError::MissingParam(name.to_string()))?;
        if e.shape != shape {
            return Err(ModelError::ParamShape {
                name: name.to_string(),
                got: e.shape.clone(),
                want: shape.to_vec(),
            });
        }
        self.used.borrow_mut().insert(key.clone());
        to_f32(e.dtype, &self.store.bytes(e)).map_err(|err| ModelError::Config(format!("{name}: {err}")))
    }

    /// `BasicConv2d` `prefix` with kernel `[cout, cin, kh, kw]`, folded.
    fn conv(
        &self,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: [usize; 2],
        stride: i64,
        padding: [i64; 2],
    ) -> Result<BasicConv<O::T>> {
        let w = self.get(&format!("{prefix}.conv.weight"), &[cout, cin, k[0], k[1]])?;
        let gamma = self.get(&format!("{prefix}.bn.weight"), &[cout])?;
        let beta = self.get(&format!("{prefix}.bn.bias"), &[cout])?;
        let mean = self.get(&format!("{prefix}.bn.running_mean"), &[cout])?;
        let var = self.get(&format!("{prefix}.bn.running_var"), &[cout])?;
        let per = cin * k[0] * k[1];
        let mut wf = Vec::with_capacity(w.len());
        let mut bf = Vec::with_capacity(cout);
        for c in 0..cout {
            let s = gamma[c] as f64 / (var[c] as f64 + BN_EPS).sqrt();
            wf.extend(w[c * per..(c + 1) * per].iter().map(|&v| (v as f64 * s) as f32));
            bf.push((beta[c] as f64 - mean[c] as f64 * s) as f32);
        }
        let w = self
            .ops
            .parameter(&format!("{prefix}.weight"), &wf, &[cout, cin, k[0], k[1]])?;
        let b = self.ops.parameter(&format!("{prefix}.bias"), &bf, &[cout])?;
        Ok(BasicConv {
            w,
            b,
            stride: [stride, stride],
            padding,
        })
    }

    /// A square `k×k` "same" convolution (padding `(k−1)/2`, stride 1).
    fn same(&self, prefix: &str, cin: usize, cout: usize, k: usize) -> Result<BasicConv<O::T>> {
        let p = (k as i64 - 1) / 2;
        self.conv(prefix, cin, cout, [k, k], 1, [p, p])
    }

    /// A `kh×kw` stride-1 convolution with "same" padding.
    fn rect(&self, prefix: &str, cin: usize, cout: usize, kh: usize, kw: usize) -> Result<BasicConv<O::T>> {
        self.conv(
            prefix,
            cin,
            cout,
            [kh, kw],
            1,
            [(kh as i64 - 1) / 2, (kw as i64 - 1) / 2],
        )
    }

    /// A `k×k` stride-2 valid convolution.
    fn down(&self, prefix: &str, cin: usize, cout: usize, k: usize) -> Result<BasicConv<O::T>> {
        self.conv(prefix, cin, cout, [k, k], 2, [0, 0])
    }

    /// Every tensor except `fc.*` must have been used.
    fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let mut unused: Vec<&str> = self
            .store
            .entries()
            .iter()
            .map(|e| e.name.as_str())
            .filter(|n| !used.contains(*n) && !n.starts_with("fc.") && !n.ends_with("num_batches_tracked"))
            .collect();
        unused.sort();
        match unused.first() {
            Some(first) => Err(ModelError::UnusedParams {
                count: unused.len(),
                example: first.to_string(),
            }),
            None => Ok(()),
        }
    }
}

/// InceptionA (`Mixed_5b/5c/5d`).
#[derive(Debug, Clone)]
struct BlockA<T> {
    b1x1: BasicConv<T>,
    b5x5: [BasicConv<T>; 2],
    b3x3dbl: [BasicConv<T>; 3],
    pool: BasicConv<T>,
}

/// InceptionB (`Mixed_6a`).
#[derive(Debug, Clone)]
struct BlockB<T> {
    b3x3: BasicConv<T>,
    b3x3dbl: [BasicConv<T>; 3],
}

/// InceptionC (`Mixed_6b..6e`).
#[derive(Debug, Clone)]
struct BlockC<T> {
    b1x1: BasicConv<T>,
    b7x7: [BasicConv<T>; 3],
    b7x7dbl: [BasicConv<T>; 5],
    pool: BasicConv<T>,
}

/// InceptionD (`Mixed_7a`).
#[derive(Debug, Clone)]
struct BlockD<T> {
    b3x3: [BasicConv<T>; 2],
    b7x7x3: [BasicConv<T>; 4],
}

/// InceptionE (`Mixed_7b` average pool, `Mixed_7c` max pool).
#[derive(Debug, Clone)]
struct BlockE<T> {
    b1x1: BasicConv<T>,
    b3x3_1: BasicConv<T>,
    b3x3_2: [BasicConv<T>; 2],
    b3x3dbl_1: BasicConv<T>,
    b3x3dbl_2: BasicConv<T>,
    b3x3dbl_3: [BasicConv<T>; 2],
    pool: BasicConv<T>,
    max_pool: bool,
}

fn chain<O: Ops>(o: &O, convs: &[BasicConv<O::T>], x: &O::T) -> Result<O::T> {
    let mut y = x.clone();
    for c in convs {
        y = c.forward(o, &y)?;
    }
    Ok(y)
}

/// The TF "SAME" 3×3/1 average pool (padding excluded from the count).
fn avg3<O: Ops>(o: &O, x: &O::T) -> Result<O::T> {
    o.avg_pool2d_ext(x, 3, 1, 1, false)
}

impl<T: Clone> BlockA<T> {
    fn load<O: Ops<T = T>>(l: &Loader<O>, p: &str, cin: usize, pool_features: usize) -> Result<Self> {
        Ok(BlockA {
            b1x1: l.same(&format!("{p}.branch1x1"), cin, 64, 1)?,
            b5x5: [
                l.same(&format!("{p}.branch5x5_1"), cin, 48, 1)?,
                l.same(&format!("{p}.branch5x5_2"), 48, 64, 5)?,
            ],
            b3x3dbl: [
                l.same(&format!("{p}.branch3x3dbl_1"), cin, 64, 1)?,
                l.same(&format!("{p}.branch3x3dbl_2"), 64, 96, 3)?,
                l.same(&format!("{p}.branch3x3dbl_3"), 96, 96, 3)?,
            ],
            pool: l.same(&format!("{p}.branch_pool"), cin, pool_features, 1)?,
        })
    }
    fn forward<O: Ops<T = T>>(&self, o: &O, x: &T) -> Result<T> {
        let a = self.b1x1.forward(o, x)?;
        let b = chain(o, &self.b5x5, x)?;
        let c = chain(o, &self.b3x3dbl, x)?;
        let d = self.pool.forward(o, &avg3(o, x)?)?;
        o.concat(&[&a, &b, &c, &d], 1)
    }
}

impl<T: Clone> BlockB<T> {
    fn load<O: Ops<T = T>>(l: &Loader<O>, p: &str, cin: usize) -> Result<Self> {
        Ok(BlockB {
            b3x3: l.down(&format!("{p}.branch3x3"), cin, 384, 3)?,
            b3x3dbl: [
                l.same(&format!("{p}.branch3x3dbl_1"), cin, 64, 1)?,
                l.same(&format!("{p}.branch3x3dbl_2"), 64, 96, 3)?,
                l.down(&format!("{p}.branch3x3dbl_3"), 96, 96, 3)?,
            ],
        })
    }
    fn forward<O: Ops<T = T>>(&self, o: &O, x: &T) -> Result<T> {
        let a = self.b3x3.forward(o, x)?;
        let b = chain(o, &self.b3x3dbl, x)?;
        let c = o.max_pool2d(x, 3, 2, 0)?;
        o.concat(&[&a, &b, &c], 1)
    }
}

impl<T: Clone> BlockC<T> {
    fn load<O: Ops<T = T>>(l: &Loader<O>, p: &str, c7: usize) -> Result<Self> {
        let cin = 768;
        Ok(BlockC {
            b1x1: l.same(&format!("{p}.branch1x1"), cin, 192, 1)?,
            b7x7: [
                l.same(&format!("{p}.branch7x7_1"), cin, c7, 1)?,
                l.rect(&format!("{p}.branch7x7_2"), c7, c7, 1, 7)?,
                l.rect(&format!("{p}.branch7x7_3"), c7, 192, 7, 1)?,
            ],
            b7x7dbl: [
                l.same(&format!("{p}.branch7x7dbl_1"), cin, c7, 1)?,
                l.rect(&format!("{p}.branch7x7dbl_2"), c7, c7, 7, 1)?,
                l.rect(&format!("{p}.branch7x7dbl_3"), c7, c7, 1, 7)?,
                l.rect(&format!("{p}.branch7x7dbl_4"), c7, c7, 7, 1)?,
                l.rect(&format!("{p}.branch7x7dbl_5"), c7, 192, 1, 7)?,
            ],
            pool: l.same(&format!("{p}.branch_pool"), cin, 192, 1)?,
        })
    }
    fn forward<O: Ops<T = T>>(&self, o: &O, x: &T) -> Result<T> {
        let a = self.b1x1.forward(o, x)?;
        let b = chain(o, &self.b7x7, x)?;
        let c = chain(o, &self.b7x7dbl, x)?;
        let d = self.pool.forward(o, &avg3(o, x)?)?;
        o.concat(&[&a, &b, &c, &d], 1)
    }
}

impl<T: Clone> BlockD<T> {
    fn load<O: Ops<T = T>>(l: &Loader<O>, p: &str) -> Result<Self> {
        let cin = 768;
        Ok(BlockD {
            b3x3: [
                l.same(&format!("{p}.branch3x3_1"), cin, 192, 1)?,
                l.down(&format!("{p}.branch3x3_2"), 192, 320, 3)?,
            ],
            b7x7x3: [
                l.same(&format!("{p}.branch7x7x3_1"), cin, 192, 1)?,
                l.rect(&format!("{p}.branch7x7x3_2"), 192, 192, 1, 7)?,
                l.rect(&format!("{p}.branch7x7x3_3"), 192, 192, 7, 1)?,
                l.down(&format!("{p}.branch7x7x3_4"), 192, 192, 3)?,
            ],
        })
    }
    fn forward<O: Ops<T = T>>(&self, o: &O, x: &T) -> Result<T> {
        let a = chain(o, &self.b3x3, x)?;
        let b = chain(o, &self.b7x7x3, x)?;
        let c = o.max_pool2d(x, 3, 2, 0)?;
        o.concat(&[&a, &b, &c], 1)
    }
}

impl<T: Clone> BlockE<T> {
    fn load<O: Ops<T = T>>(l: &Loader<O>, p: &str, cin: usize, max_pool: bool) -> Result<Self> {
        Ok(BlockE {
            b1x1: l.same(&format!("{p}.branch1x1"), cin, 320, 1)?,
            b3x3_1: l.same(&format!("{p}.branch3x3_1"), cin, 384, 1)?,
            b3x3_2: [
                l.rect(&format!("{p}.branch3x3_2a"), 384, 384, 1, 3)?,
                l.rect(&format!("{p}.branch3x3_2b"), 384, 384, 3, 1)?,
            ],
            b3x3dbl_1: l.same(&format!("{p}.branch3x3dbl_1"), cin, 448, 1)?,
            b3x3dbl_2: l.same(&format!("{p}.branch3x3dbl_2"), 448, 384, 3)?,
            b3x3dbl_3: [
                l.rect(&format!("{p}.branch3x3dbl_3a"), 384, 384, 1, 3)?,
                l.rect(&format!("{p}.branch3x3dbl_3b"), 384, 384, 3, 1)?,
            ],
            pool: l.same(&format!("{p}.branch_pool"), cin, 192, 1)?,
            max_pool,
        })
    }
    fn forward<O: Ops<T = T>>(&self, o: &O, x: &T) -> Result<T> {
        let a = self.b1x1.forward(o, x)?;
        let b1 = self.b3x3_1.forward(o, x)?;
        let b = o.concat(
            &[&self.b3x3_2[0].forward(o, &b1)?, &self.b3x3_2[1].forward(o, &b1)?],
            1,
        )?;
        let c1 = self.b3x3dbl_2.forward(o, &self.b3x3dbl_1.forward(o, x)?)?;
        let c = o.concat(
            &[
                &self.b3x3dbl_3[0].forward(o, &c1)?,
                &self.b3x3dbl_3[1].forward(o, &c1)?,
            ],
            1,
        )?;
        let pooled = if self.max_pool {
            o.max_pool2d(x, 3, 1, 1)?
        } else {
            avg3(o, x)?
        };
        let d = self.pool.forward(o, &pooled)?;
        o.concat(&[&a, &b, &c, &d], 1)
    }
}

/// Intermediate features (global averages), as torch-fidelity names them.
#[derive(Debug, Clone)]
pub struct InceptionTaps<T> {
    /// `"64"`: global average of the first max pool's output, `[N, 64]`.
    pub pool64: T,
    /// `"192"`: global average of the second max pool's output, `[N, 192]`.
    pub pool192: T,
    /// `"768"`: global average of `Mixed_6e`, `[N, 768]`.
    pub pool768: T,
    /// `"2048"` = `pool3`: global average of `Mixed_7c`, `[N, 2048]`.
    pub pool3: T,
}

/// The FID Inception-v3 network over an [`Ops`] backend.
#[derive(Debug, Clone)]
pub struct FidInception<T> {
    stem1: [BasicConv<T>; 3],
    stem2: [BasicConv<T>; 2],
    mixed5: [BlockA<T>; 3],
    mixed6a: BlockB<T>,
    mixed6: [BlockC<T>; 4],
    mixed7a: BlockD<T>,
    mixed7: [BlockE<T>; 2],
}

fn global_mean<O: Ops>(o: &O, x: &O::T, c: i64) -> Result<O::T> {
    o.reshape(&o.mean_keepdim(x, &[2, 3])?, &[-1, c])
}

impl<T: Clone> FidInception<T> {
    /// Builds the network from a state dict (torch-fidelity / pytorch-fid names, see the
    /// module docs), folding BatchNorm into the convolutions. Every tensor except `fc.*` (and
    /// `num_batches_tracked`) must be used, and every shape must match the architecture.
    pub fn from_store<O: Ops<T = T>>(ops: &O, store: &TensorStore) -> Result<Self> {
        let l = Loader::new(ops, store);
        if !l.names.contains_key("Conv2d_1a_3x3.conv.weight") {
            let example = store
                .entries()
                .first()
                .map(|e| e.name.as_str())
                .unwrap_or("(none)");
            return Err(ModelError::Config(format!(
                "not the Inception-v3 FID weights: no tensor Conv2d_1a_3x3.conv.weight (or pytorch-fid's blocks.0.0.conv.weight); \
                 {} tensor(s), e.g. {example:?}. Expected the state dict pt_inception-2015-12-05-6726825d.pth of pytorch-fid/torch-fidelity",
                store.len()
            )));
        }
        let net = FidInception {
            stem1: [
                l.down("Conv2d_1a_3x3", 3, 32, 3)?,
                l.conv("Conv2d_2a_3x3", 32, 32, [3, 3], 1, [0, 0])?,
                l.same("Conv2d_2b_3x3", 32, 64, 3)?,
            ],
            stem2: [
                l.same("Conv2d_3b_1x1", 64, 80, 1)?,
                l.conv("Conv2d_4a_3x3", 80, 192, [3, 3], 1, [0, 0])?,
            ],
            mixed5: [
                BlockA::load(&l, "Mixed_5b", 192, 32)?,
                BlockA::load(&l, "Mixed_5c", 256, 64)?,
                BlockA::load(&l, "Mixed_5d", 288, 64)?,
            ],
            mixed6a: BlockB::load(&l, "Mixed_6a", 288)?,
            mixed6: [
                BlockC::load(&l, "Mixed_6b", 128)?,
                BlockC::load(&l, "Mixed_6c", 160)?,
                BlockC::load(&l, "Mixed_6d", 160)?,
                BlockC::load(&l, "Mixed_6e", 192)?,
            ],
            mixed7a: BlockD::load(&l, "Mixed_7a")?,
            mixed7: [
                BlockE::load(&l, "Mixed_7b", 1280, false)?,
                BlockE::load(&l, "Mixed_7c", 2048, true)?,
            ],
        };
        l.check_all_used()?;
        Ok(net)
    }

    /// `pool3` features `[N, 2048]` of a normalised `[N, 3, 299, 299]` input.
    pub fn forward<O: Ops<T = T>>(&self, o: &O, x: &T) -> Result<T> {
        Ok(self.run(o, x, false)?.pool3)
    }

    /// All of torch-fidelity's features (64, 192, 768, 2048) of a normalised input.
    pub fn forward_taps<O: Ops<T = T>>(&self, o: &O, x: &T) -> Result<InceptionTaps<T>> {
        self.run(o, x, true)
    }

    fn run<O: Ops<T = T>>(&self, o: &O, x: &T, taps: bool) -> Result<InceptionTaps<T>> {
        let y = chain(o, &self.stem1, x)?;
        let y = o.max_pool2d(&y, 3, 2, 0)?;
        let pool64 = if taps { Some(global_mean(o, &y, 64)?) } else { None };
        let y = chain(o, &self.stem2, &y)?;
        let mut y = o.max_pool2d(&y, 3, 2, 0)?;
        let pool192 = if taps {
            Some(global_mean(o, &y, 192)?)
        } else {
            None
        };
        for b in &self.mixed5 {
            y = b.forward(o, &y)?;
        }
        y = self.mixed6a.forward(o, &y)?;
        for b in &self.mixed6 {
            y = b.forward(o, &y)?;
        }
        let pool768 = if taps {
            Some(global_mean(o, &y, 768)?)
        } else {
            None
        };
        y = self.mixed7a.forward(o, &y)?;
        for b in &self.mixed7 {
            y = b.forward(o, &y)?;
        }
        let pool3 = global_mean(o, &y, FEATURE_DIM as i64)?;
        Ok(InceptionTaps {
            pool64: pool64.unwrap_or_else(|| pool3.clone()),
            pool192: pool192.unwrap_or_else(|| pool3.clone()),
            pool768: pool768.unwrap_or_else(|| pool3.clone()),
            pool3,
        })
    }
}

/// Exports the network as an ONNX graph: input `x [N, 3, 299, 299]` (normalised), output
/// `features [N, 2048]`; `metadata_props` hold `tiw.kind = fid-inception` plus `extra_meta`.
pub fn export_onnx(
    store: &TensorStore,
    opset: i64,
    extra_meta: &[(String, String)],
) -> Result<crate::onnx_model::OnnxModel> {
    let o = OnnxOps::new(opset)?;
    let net = FidInception::from_store(&o, store)?;
    let n = Dim::Sym("N".into());
    let s = Dim::Fixed(INPUT_SIZE as i64);
    let x = o.input("x", &[n.clone(), Dim::Fixed(3), s.clone(), s]);
    let y = net.forward(&o, &x)?;
    let mut meta = vec![("tiw.kind".to_string(), "fid-inception".to_string())];
    meta.extend_from_slice(extra_meta);
    Ok(o.finish(
        &[("features", &y, vec![n, Dim::Fixed(FEATURE_DIM as i64)])],
        &meta,
    ))
}
