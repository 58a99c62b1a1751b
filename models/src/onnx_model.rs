//! A recorded ONNX model whose checkpoint tensors are read only when it is written.
//!
//! [`crate::onnx_ops::OnnxOps`] records network tensors that come from a checkpoint as
//! references ([`Initializer::Stored`]) instead of copies. [`OnnxModel::write_to`] then
//! streams the protobuf encoding: for each such initializer it converts that one tensor to
//! f32, writes it and tells the kernel the checkpoint's pages may go, so exporting a network
//! holds about one tensor in memory instead of the weights two or three times over (the
//! checkpoint, the `TensorProto` copies and the encoded message).
//!
//! The bytes are exactly prost's encoding of the materialised [`ModelProto`]
//! ([`OnnxModel::into_proto`]): fields in tag order, lengths from prost's own
//! `encoded_len`; only the nesting (`ModelProto.graph` = 7, `GraphProto.initializer` = 5,
//! `TensorProto.raw_data` = 9) is framed here with prost's encoding helpers.

use std::io::Write;
use std::sync::Arc;

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;
use tiw_converters::{Buffer, TensorEntry};
use tract_onnx::pb::{tensor_proto::DataType, GraphProto, ModelProto, StringStringEntryProto, TensorProto};

use crate::{ModelError, Result};

const MODEL_GRAPH: u32 = 7;
const GRAPH_INITIALIZER: u32 = 5;
const TENSOR_RAW_DATA: u32 = 9;

/// One initializer of a recorded graph.
pub enum Initializer {
    /// Values in memory.
    Inline(TensorProto),
    /// A checkpoint tensor (entry `entry` of buffer `buf`), written as f32 `raw_data` when
    /// the model is written; `header` holds its name, dims and data type, no data.
    Stored {
        /// `TensorProto` without `raw_data`.
        header: TensorProto,
        /// The checkpoint's buffer.
        buf: Arc<Buffer>,
        /// The tensor in it.
        entry: TensorEntry,
    },
}

impl Initializer {
    pub(crate) fn name(&self) -> &str {
        match self {
            Initializer::Inline(t) => &t.name,
            Initializer::Stored { header, .. } => &header.name,
        }
    }

    fn dims(&self) -> &[i64] {
        match self {
            Initializer::Inline(t) => &t.dims,
            Initializer::Stored { header, .. } => &header.dims,
        }
    }

    /// Switches a float initializer to f16 storage (values rounded to nearest even): inline
    /// data is converted now, a stored tensor when it is written.
    pub(crate) fn store_as_f16(&mut self) {
        match self {
            Initializer::Inline(t) => {
                if t.data_type == DataType::Float as i32 {
                    t.raw_data = f32_bytes_to_f16(&t.raw_data);
                    t.data_type = DataType::Float16 as i32;
                }
            }
            Initializer::Stored { header, .. } => header.data_type = DataType::Float16 as i32,
        }
    }

    /// Bytes per element of a stored tensor as written (f32, or f16 after
    /// [`Initializer::store_as_f16`]).
    fn stored_width(header: &TensorProto) -> usize {
        if header.data_type == DataType::Float16 as i32 {
            2
        } else {
            4
        }
    }

    /// Length of the encoded `TensorProto` (with its data).
    fn encoded_len(&self) -> usize {
        match self {
            Initializer::Inline(t) => t.encoded_len(),
            Initializer::Stored { header, entry, .. } => {
                let n = entry.numel() * Self::stored_width(header);
                // proto3: an empty bytes field is not written
                header.encoded_len()
                    + if n > 0 {
                        key_len(TENSOR_RAW_DATA) + encoded_len_varint(n as u64) + n
                    } else {
                        0
                    }
            }
        }
    }

    /// The little-endian values of a stored tensor in the type its header declares (f32, or
    /// f16 rounded from the f32 value).
    fn stored_f32_bytes(header: &TensorProto, buf: &Buffer, entry: &TensorEntry) -> Result<Vec<u8>> {
        let v = crate::vb::to_f32(entry.dtype, &entry.bytes_in(buf))
            .map_err(|e| ModelError::Config(format!("{}: {e}", entry.name)))?;
        let b = bytemuck::cast_slice::<f32, u8>(&v);
        Ok(if Self::stored_width(header) == 2 {
            f32_bytes_to_f16(b)
        } else {
            b.to_vec()
        })
    }

    fn materialize(self) -> Result<TensorProto> {
        Ok(match self {
            Initializer::Inline(t) => t,
            Initializer::Stored {
                mut header,
                buf,
                entry,
            } => {
                header.raw_data = Self::stored_f32_bytes(&header, &buf, &entry)?;
                header
            }
        })
    }

    /// Writes the encoded `TensorProto`; a stored tensor's checkpoint pages are released
    /// afterwards.
    fn write_to(&self, w: &mut impl Write, scratch: &mut Vec<u8>) -> Result<()> {
        scratch.clear();
        match self {
            Initializer::Inline(t) => {
                t.encode(scratch).map_err(encode_err)?;
                w.write_all(scratch)?;
            }
            Initializer::Stored { header, buf, entry } => {
                header.encode(scratch).map_err(encode_err)?;
                let data = Self::stored_f32_bytes(header, buf, entry)?;
                if !data.is_empty() {
                    encode_key(TENSOR_RAW_DATA, WireType::LengthDelimited, scratch);
                    encode_varint(data.len() as u64, scratch);
                }
                w.write_all(scratch)?;
                w.write_all(&data)?;
                if let Some(r) = entry.storage_range() {
                    buf.release(r);
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Initializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Initializer::Inline(_) => "inline",
            Initializer::Stored { .. } => "stored",
        };
        write!(
            f,
            "Initializer({:?}, {kind}, dims {:?})",
            self.name(),
            self.dims()
        )
    }
}

/// f32 little-endian bytes → f16 little-endian bytes (IEEE binary16, nearest even).
fn f32_bytes_to_f16(b: &[u8]) -> Vec<u8> {
    b.chunks_exact(4)
        .flat_map(|c| {
            half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .to_bits()
                .to_le_bytes()
        })
        .collect()
}

fn encode_err(e: prost::EncodeError) -> ModelError {
    ModelError::Config(format!("protobuf encoding: {e}"))
}

/// An ONNX model as recorded: the model and graph fields, and the graph's initializers in
/// order (stored ones not read yet).
#[derive(Debug)]
pub struct OnnxModel {
    /// Every model field except `graph`.
    model: ModelProto,
    /// Every graph field except `initializer`.
    graph: GraphProto,
    initializers: Vec<Initializer>,
}

impl OnnxModel {
    /// A model from its parts (`model.graph` and `graph.initializer` are ignored).
    pub fn new(mut model: ModelProto, mut graph: GraphProto, initializers: Vec<Initializer>) -> Self {
        model.graph = None;
        graph.initializer.clear();
        OnnxModel {
            model,
            graph,
            initializers,
        }
    }

    /// `metadata_props` (key, value).
    pub fn metadata(&self) -> &[StringStringEntryProto] {
        &self.model.metadata_props
    }

    /// The model without its initializers' values (`graph.initializer` is empty), e.g. to
    /// read inputs, outputs or metadata.
    pub fn skeleton(&self) -> &ModelProto {
        &self.model
    }

    /// The graph without its initializers.
    pub fn graph(&self) -> &GraphProto {
        &self.graph
    }

    /// Parameter count of the float initializers whose names do not start with `const_` or
    /// `shape_` (the network's own tensors); see [`crate::onnx_ops::parameter_count`].
    pub fn parameter_count(&self) -> usize {
        self.initializers
            .iter()
            .filter(|t| !t.name().starts_with("const_") && !t.name().starts_with("shape_"))
            .map(|t| t.dims().iter().product::<i64>() as usize)
            .sum()
    }

    /// The complete `ModelProto` (reads every stored tensor into memory).
    pub fn into_proto(self) -> Result<ModelProto> {
        let mut graph = self.graph;
        graph.initializer = self
            .initializers
            .into_iter()
            .map(Initializer::materialize)
            .collect::<Result<_>>()?;
        Ok(ModelProto {
            graph: Some(graph),
            ..self.model
        })
    }

    /// The model fields before `graph` (tags 1–6) and after it (8, 14, 20, 25).
    fn model_head_tail(&self) -> (ModelProto, ModelProto) {
        let m = &self.model;
        let tail = ModelProto {
            opset_import: m.opset_import.clone(),
            metadata_props: m.metadata_props.clone(),
            training_info: m.training_info.clone(),
            functions: m.functions.clone(),
            ..Default::default()
        };
        let head = ModelProto {
            opset_import: Vec::new(),
            metadata_props: Vec::new(),
            training_info: Vec::new(),
            functions: Vec::new(),
            graph: None,
            ..m.clone()
        };
        (head, tail)
    }

    /// The graph fields before `initializer` (tags 1, 2) and after it (10 and up).
    fn graph_head_tail(&self) -> (GraphProto, GraphProto) {
        let g = &self.graph;
        let head = GraphProto {
            node: g.node.clone(),
            name: g.name.clone(),
            ..Default::default()
        };
        let tail = GraphProto {
            node: Vec::new(),
            name: String::new(),
            initializer: Vec::new(),
            ..g.clone()
        };
        (head, tail)
    }

    fn graph_len(&self, head: &GraphProto, tail: &GraphProto) -> usize {
        let inits: usize = self
            .initializers
            .iter()
            .map(|t| {
                let n = t.encoded_len();
                key_len(GRAPH_INITIALIZER) + encoded_len_varint(n as u64) + n
            })
            .sum();
        head.encoded_len() + inits + tail.encoded_len()
    }

    /// Length of the encoded model in bytes.
    pub fn encoded_len(&self) -> usize {
        let (mh, mt) = self.model_head_tail();
        let (gh, gt) = self.graph_head_tail();
        let g = self.graph_len(&gh, &gt);
        mh.encoded_len() + key_len(MODEL_GRAPH) + encoded_len_varint(g as u64) + g + mt.encoded_len()
    }

    /// Writes the protobuf encoding to `w`, one initializer at a time.
    pub fn write_to(&self, w: &mut impl Write) -> Result<()> {
        let (mh, mt) = self.model_head_tail();
        let (gh, gt) = self.graph_head_tail();
        let mut scratch = Vec::new();
        mh.encode(&mut scratch).map_err(encode_err)?;
        encode_key(MODEL_GRAPH, WireType::LengthDelimited, &mut scratch);
        encode_varint(self.graph_len(&gh, &gt) as u64, &mut scratch);
        gh.encode(&mut scratch).map_err(encode_err)?;
        w.write_all(&scratch)?;
        let mut frame = Vec::new();
        for t in &self.initializers {
            frame.clear();
            encode_key(GRAPH_INITIALIZER, WireType::LengthDelimited, &mut frame);
            encode_varint(t.encoded_len() as u64, &mut frame);
            w.write_all(&frame)?;
            t.write_to(w, &mut scratch)?;
        }
        scratch.clear();
        gt.encode(&mut scratch).map_err(encode_err)?;
        mt.encode(&mut scratch).map_err(encode_err)?;
        w.write_all(&scratch)?;
        Ok(())
    }

    /// The protobuf encoding in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out)?;
        Ok(out)
    }
}
