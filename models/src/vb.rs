//! Parameter access by dotted name, in the spirit of candle's `VarBuilder`.
//!
//! A [`Weights`] either serves tensors loaded from a checkpoint (checking shapes and
//! recording which names were used) or, in *create* modes, makes fresh tensors of the
//! requested shapes and records the names, shapes and kinds in request order — which,
//! because every architecture requests its tensors in PyTorch registration order, is the
//! `state_dict` listing of that configuration. Create modes: [`Weights::create`] (cheap
//! pseudo-random ±0.05, for listings and benchmarks), [`Weights::zeros`], and
//! [`Weights::init`] — the official initialisers ([`Init`], declared by each layer), drawn
//! from libtorch's generator like PyTorch draws them, for training from scratch.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use tiw_converters::{DType, TensorStore};

use crate::backend::Ops;
use crate::{ModelError, Result};

/// Parameter or buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// A trainable parameter.
    Param,
    /// A persistent buffer.
    Buffer,
}

/// One requested tensor (create mode listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Dotted name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Parameter or buffer.
    pub kind: TensorKind,
}

/// EDM's `weight_init` modes (SPEC §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitMode {
    /// `sqrt(6/(fan_in+fan_out))·U(−1,1)`.
    XavierUniform,
    /// `sqrt(2/(fan_in+fan_out))·N(0,1)`.
    XavierNormal,
    /// `sqrt(3/fan_in)·U(−1,1)`.
    KaimingUniform,
    /// `sqrt(1/fan_in)·N(0,1)`.
    KaimingNormal,
}

/// How a fresh tensor is initialised by [`Weights::init`] (ignored by the other sources).
///
/// Every variant states the libtorch operations it performs on the CPU default generator,
/// in the order PyTorch performs them, so that a network initialised after
/// `torch.manual_seed(s)` in Python and `Weights::init(ops, s)` here draw the same stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// No initialiser declared (`Vb::param`): [`Weights::init`] refuses such tensors.
    Unspecified,
    /// EDM `weight_init(shape, mode, fan_in, fan_out) · gain`: uniform modes compute
    /// `(rand(shape)·2 − 1)·k`, normal modes `randn(shape)·k` with `k` from [`InitMode`], then
    /// `·gain` (`init_weight` for weights, `init_bias` for biases — drawn even when 0).
    Edm {
        /// Mode.
        mode: InitMode,
        /// Fan-in (`in·k²` for convolutions).
        fan_in: usize,
        /// Fan-out (`out·k²` for convolutions).
        fan_out: usize,
        /// `init_weight` / `init_bias`.
        gain: f64,
    },
    /// `empty(shape).uniform_(−bound, bound)` (PyTorch's default Linear/Conv init uses
    /// `bound = 1/sqrt(fan_in)` for both weight and bias, see [`Init::torch_default`]).
    Uniform {
        /// Half-width.
        bound: f64,
    },
    /// `randn(shape) · scale` (`FourierEmbedding`: 16; `nn.Embedding`: 1).
    RandnMul(f64),
    /// `randn(shape) / div` (`AttentionPool2d.positional_embedding`: `C ** 0.5`).
    RandnDiv(f64),
    /// A constant (no draws): GroupNorm weight 1, bias 0.
    Const(f32),
    /// Drawn like the inner initialiser, then set to zero (guided_diffusion's `zero_module`).
    Zeroed(Box<Init>),
}

impl Init {
    /// PyTorch's default `nn.Linear`/`nn.Conv*d` init for a tensor of a layer with `fan_in`
    /// inputs (`in·∏kernel`): `kaiming_uniform_(a=√5)` for the weight, whose bound
    /// `√3·sqrt(2/(1+a²))/sqrt(fan_in)` is `1/sqrt(fan_in)`, and `U(±1/sqrt(fan_in))` for the
    /// bias. `weight` selects the formula (they agree up to rounding of the bound).
    pub fn torch_default(fan_in: usize, weight: bool) -> Init {
        let bound = if weight {
            let a = 5f64.sqrt();
            let gain = (2.0 / (1.0 + a * a)).sqrt();
            3f64.sqrt() * (gain / (fan_in as f64).sqrt())
        } else if fan_in > 0 {
            1.0 / (fan_in as f64).sqrt()
        } else {
            0.0
        };
        Init::Uniform { bound }
    }

    /// The values for `shape`, drawn from libtorch's CPU default generator (`None` for
    /// [`Init::Unspecified`]).
    #[cfg(feature = "tch")]
    pub fn draw(&self, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        use tch::{Device, Kind, Tensor};
        let s: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let opts = (Kind::Float, Device::Cpu);
        let t = match self {
            Init::Unspecified => return Ok(None),
            Init::Edm {
                mode,
                fan_in,
                fan_out,
                gain,
            } => {
                let (fi, fo) = (*fan_in as f64, *fan_out as f64);
                let base = match mode {
                    InitMode::XavierUniform => Tensor::f_rand(&s, opts)?
                        .f_mul_scalar(2)?
                        .f_sub_scalar(1)?
                        .f_mul_scalar((6.0 / (fi + fo)).sqrt())?,
                    InitMode::XavierNormal => {
                        Tensor::f_randn(&s, opts)?.f_mul_scalar((2.0 / (fi + fo)).sqrt())?
                    }
                    InitMode::KaimingUniform => Tensor::f_rand(&s, opts)?
                        .f_mul_scalar(2)?
                        .f_sub_scalar(1)?
                        .f_mul_scalar((3.0 / fi).sqrt())?,
                    InitMode::KaimingNormal => Tensor::f_randn(&s, opts)?.f_mul_scalar((1.0 / fi).sqrt())?,
                };
                base.f_mul_scalar(*gain)?
            }
            Init::Uniform { bound } => Tensor::f_empty(&s, opts)?.f_uniform_(-bound, *bound)?,
            Init::RandnMul(k) => Tensor::f_randn(&s, opts)?.f_mul_scalar(*k)?,
            Init::RandnDiv(k) => Tensor::f_randn(&s, opts)?.f_div_scalar(*k)?,
            Init::Const(c) => Tensor::f_full(&s, *c as f64, opts)?,
            Init::Zeroed(inner) => {
                inner.draw(shape)?;
                Tensor::f_zeros(&s, opts)?
            }
        };
        Ok(Some(Vec::<f32>::try_from(&t.f_contiguous()?.f_view([-1])?)?))
    }
}

enum Source<T> {
    Loaded(HashMap<String, (Vec<usize>, T)>),
    Create {
        seed: RefCell<u64>,
        zeros: bool,
    },
    #[cfg(feature = "tch")]
    Init,
}

/// Named tensors for building a model.
pub struct Weights<'o, O: Ops> {
    ops: &'o O,
    source: Source<O::T>,
    used: RefCell<HashSet<String>>,
    listing: RefCell<Vec<Listed>>,
    /// Tensors made by a create source, parallel to `listing`, with their declared init.
    made: RefCell<Vec<(O::T, Init)>>,
}

/// Converts the little-endian bytes of a tensor to f32.
pub fn to_f32(dtype: DType, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        // little-endian host (x86-64 / aarch64): the bytes are the values; copied once
        DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(bytes),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| tiw_converters::pickle::globals::f16_to_f64(u16::from_le_bytes([c[0], c[1]])) as f32)
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        other => {
            return Err(ModelError::Config(format!(
                "{other} weights cannot be used as f32 parameters"
            )))
        }
    })
}

impl<'o, O: Ops> Weights<'o, O> {
    /// Serves the tensors of `store` (converted to f32).
    pub fn from_store(ops: &'o O, store: &TensorStore) -> Result<Self> {
        let mut map = HashMap::new();
        for e in store.entries() {
            let t = ops.stored_parameter(store.buffer(), e)?;
            map.insert(e.name.clone(), (e.shape.clone(), t));
        }
        Ok(Weights {
            ops,
            source: Source::Loaded(map),
            used: Default::default(),
            listing: Default::default(),
            made: Default::default(),
        })
    }

    /// Create mode: fresh deterministic pseudo-random tensors (uniform in ±0.05, or the
    /// given buffer values), recording the listing.
    pub fn create(ops: &'o O, seed: u64) -> Self {
        Weights {
            ops,
            source: Source::Create {
                seed: RefCell::new(seed | 1),
                zeros: false,
            },
            used: Default::default(),
            listing: Default::default(),
            made: Default::default(),
        }
    }

    /// Create mode with all-zero parameters (buffers get their given values): the cheapest
    /// way to instantiate a configuration, e.g. to list its state_dict.
    pub fn zeros(ops: &'o O) -> Self {
        Weights {
            ops,
            source: Source::Create {
                seed: RefCell::new(1),
                zeros: true,
            },
            used: Default::default(),
            listing: Default::default(),
            made: Default::default(),
        }
    }

    /// Fresh networks for training: `tch::manual_seed(seed)`, then every tensor drawn from
    /// libtorch's CPU default generator in request (PyTorch construction) order with the
    /// [`Init`] its layer declares; buffers given a value keep it. A tensor requested without
    /// an initialiser is an error. Nothing else may draw from the global generator while the
    /// network is built.
    #[cfg(feature = "tch")]
    pub fn init(ops: &'o O, seed: u64) -> Self {
        tch::manual_seed(seed as i64);
        Weights {
            ops,
            source: Source::Init,
            used: Default::default(),
            listing: Default::default(),
            made: Default::default(),
        }
    }

    /// The ops.
    pub fn ops(&self) -> &'o O {
        self.ops
    }

    /// Every requested tensor with the initialiser its layer declared, in request order.
    pub fn inits(&self) -> Vec<(String, Init)> {
        let l = self.listing.borrow();
        let m = self.made.borrow();
        match &self.source {
            Source::Loaded(_) => l.iter().map(|x| (x.name.clone(), Init::Unspecified)).collect(),
            _ => l
                .iter()
                .zip(m.iter())
                .map(|(x, (_, i))| (x.name.clone(), i.clone()))
                .collect(),
        }
    }

    /// Root builder.
    pub fn root(&self) -> Vb<'_, 'o, O> {
        Vb {
            w: self,
            prefix: String::new(),
        }
    }

    /// Names requested so far with shapes and kinds, in request order.
    pub fn listing(&self) -> Vec<Listed> {
        self.listing.borrow().clone()
    }

    /// Every requested tensor with its kind, in request (state_dict) order.
    pub fn named(&self) -> Result<Vec<(String, TensorKind, O::T)>> {
        match &self.source {
            Source::Loaded(map) => Ok(self
                .listing
                .borrow()
                .iter()
                .map(|l| (l.name.clone(), l.kind, map[&l.name].1.clone()))
                .collect()),
            _ => Ok(self
                .listing
                .borrow()
                .iter()
                .zip(self.made.borrow().iter())
                .map(|(l, (t, _))| (l.name.clone(), l.kind, t.clone()))
                .collect()),
        }
    }

    /// Fails if loaded weights contain names the model did not use.
    pub fn check_all_used(&self) -> Result<()> {
        if let Source::Loaded(map) = &self.source {
            let used = self.used.borrow();
            let mut unused: Vec<&String> = map.keys().filter(|k| !used.contains(*k)).collect();
            unused.sort();
            if let Some(first) = unused.first() {
                return Err(ModelError::UnusedParams {
                    count: unused.len(),
                    example: (*first).clone(),
                });
            }
        }
        Ok(())
    }

    fn fetch(
        &self,
        name: &str,
        shape: &[usize],
        kind: TensorKind,
        init: Option<&[f32]>,
        how: &Init,
    ) -> Result<O::T> {
        self.listing.borrow_mut().push(Listed {
            name: name.to_string(),
            shape: shape.to_vec(),
            kind,
        });
        match &self.source {
            Source::Loaded(map) => {
                let (s, t) = map
                    .get(name)
                    .ok_or_else(|| ModelError::MissingParam(name.to_string()))?;
                if s != shape {
                    return Err(ModelError::ParamShape {
                        name: name.to_string(),
                        got: s.clone(),
                        want: shape.to_vec(),
                    });
                }
                self.used.borrow_mut().insert(name.to_string());
                match kind {
                    TensorKind::Buffer => self.ops.buffer_value(t),
                    TensorKind::Param => Ok(t.clone()),
                }
            }
            Source::Create { seed, zeros } => {
                let n: usize = shape.iter().product();
                let data: Vec<f32> = match init {
                    Some(v) => v.to_vec(),
                    None if *zeros => vec![0.0; n],
                    None => {
                        let mut s = seed.borrow_mut();
                        (0..n)
                            .map(|_| {
                                *s ^= *s << 13;
                                *s ^= *s >> 7;
                                *s ^= *s << 17;
                                ((*s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
                            })
                            .collect()
                    }
                };
                let t = self.ops.parameter(name, &data, shape)?;
                self.made.borrow_mut().push((t.clone(), how.clone()));
                match kind {
                    TensorKind::Buffer => self.ops.buffer_value(&t),
                    TensorKind::Param => Ok(t),
                }
            }
            #[cfg(feature = "tch")]
            Source::Init => {
                let data = match init {
                    Some(v) => v.to_vec(),
                    None => how.draw(shape)?.ok_or_else(|| {
                        ModelError::Config(format!("{name}: no initialiser declared for a fresh network"))
                    })?,
                };
                let t = self.ops.parameter(name, &data, shape)?;
                self.made.borrow_mut().push((t.clone(), how.clone()));
                match kind {
                    TensorKind::Buffer => self.ops.buffer_value(&t),
                    TensorKind::Param => Ok(t),
                }
            }
        }
    }

    fn has(&self, name: &str) -> Option<Vec<usize>> {
        match &self.source {
            Source::Loaded(map) => map.get(name).map(|(s, _)| s.clone()),
            _ => None,
        }
    }
}

/// A builder positioned at a dotted prefix.
pub struct Vb<'w, 'o, O: Ops> {
    w: &'w Weights<'o, O>,
    prefix: String,
}

impl<'w, 'o, O: Ops> Vb<'w, 'o, O> {
    /// The builder for child `name`.
    pub fn pp(&self, name: impl AsRef<str>) -> Vb<'w, 'o, O> {
        let name = name.as_ref();
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Vb { w: self.w, prefix }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The parameter `name` with the given shape (no initialiser: loading or listing only).
    pub fn param(&self, name: &str, shape: &[usize]) -> Result<O::T> {
        self.param_init(name, shape, Init::Unspecified)
    }

    /// The parameter `name`, initialised as `init` by [`Weights::init`].
    pub fn param_init(&self, name: &str, shape: &[usize], init: Init) -> Result<O::T> {
        self.w
            .fetch(&self.full(name), shape, TensorKind::Param, None, &init)
    }

    /// The buffer `name`; `init` gives its value in create modes (random if `None`).
    pub fn buffer(&self, name: &str, shape: &[usize], init: Option<&[f32]>) -> Result<O::T> {
        self.w.fetch(
            &self.full(name),
            shape,
            TensorKind::Buffer,
            init,
            &Init::Unspecified,
        )
    }

    /// A buffer drawn at construction (e.g. `FourierEmbedding.freqs`), initialised as `init`
    /// by [`Weights::init`] (random ±0.05 by [`Weights::create`]).
    pub fn buffer_random(&self, name: &str, shape: &[usize], init: Init) -> Result<O::T> {
        self.w
            .fetch(&self.full(name), shape, TensorKind::Buffer, None, &init)
    }

    /// Shape of `name` in loaded weights (`None` in create mode or if absent).
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.w.has(&self.full(name))
    }

    /// The ops.
    pub fn ops(&self) -> &'o O {
        self.w.ops
    }

    /// The dotted prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}
