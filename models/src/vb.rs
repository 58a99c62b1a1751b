//! Parameter access by dotted name, in the spirit of candle's `VarBuilder`.
//!
//! A [`Weights`] either serves tensors loaded from a checkpoint (checking shapes and
//! recording which names were used) or, in *create* mode, makes fresh tensors of the
//! requested shapes and records the names, shapes and kinds in request order — which,
//! because every architecture requests its tensors in PyTorch registration order, is the
//! `state_dict` listing of that configuration.

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

enum Source<T> {
    Loaded(HashMap<String, (Vec<usize>, T)>),
    Create { seed: RefCell<u64>, zeros: bool },
}

/// Named tensors for building a model.
pub struct Weights<'o, O: Ops> {
    ops: &'o O,
    source: Source<O::T>,
    used: RefCell<HashSet<String>>,
    listing: RefCell<Vec<Listed>>,
    made: RefCell<Vec<O::T>>,
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
            let data = to_f32(e.dtype, &store.bytes(e))
                .map_err(|err| ModelError::Config(format!("{}: {err}", e.name)))?;
            map.insert(
                e.name.clone(),
                (e.shape.clone(), ops.parameter(&e.name, &data, &e.shape)?),
            );
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

    /// The ops.
    pub fn ops(&self) -> &'o O {
        self.ops
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
            Source::Create { .. } => Ok(self
                .listing
                .borrow()
                .iter()
                .zip(self.made.borrow().iter())
                .map(|(l, t)| (l.name.clone(), l.kind, t.clone()))
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

    fn fetch(&self, name: &str, shape: &[usize], kind: TensorKind, init: Option<&[f32]>) -> Result<O::T> {
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
                self.made.borrow_mut().push(t.clone());
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
            Source::Create { .. } => None,
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

    /// The parameter `name` with the given shape.
    pub fn param(&self, name: &str, shape: &[usize]) -> Result<O::T> {
        self.w.fetch(&self.full(name), shape, TensorKind::Param, None)
    }

    /// The buffer `name`; `init` gives its value in create mode (random if `None`).
    pub fn buffer(&self, name: &str, shape: &[usize], init: Option<&[f32]>) -> Result<O::T> {
        self.w.fetch(&self.full(name), shape, TensorKind::Buffer, init)
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
