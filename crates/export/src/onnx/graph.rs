//! Building an ONNX graph node by node, with every large initializer streamed into the external data
//! file as it is made (so the export never holds a second copy of the weights) and small constants kept
//! inline.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::proto::{
    attribute_type, AttributeProto, Dimension, DimensionValue, GraphProto, NodeProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto,
    ValueInfoProto,
};
use crate::error::{ExportError, Result};

/// Initializers up to this size stay inside `model.onnx`.
const INLINE_LIMIT: usize = 1024;
/// Offsets in the external data file are multiples of this (ONNX Runtime maps aligned data directly).
const ALIGN: u64 = 4096;

/// One dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size.
    Named(&'static str),
}

/// An attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f32),
    /// An integer list.
    Ints(Vec<i64>),
}

/// A graph under construction.
pub struct GraphWriter {
    graph: GraphProto,
    data: BufWriter<File>,
    data_path: PathBuf,
    data_name: String,
    offset: u64,
}

impl GraphWriter {
    /// A graph whose external initializers go to `data_path` (referred to by its file name).
    pub fn new(name: &str, data_path: &Path) -> Result<Self> {
        let file = File::create(data_path).map_err(|e| ExportError::io(data_path, e))?;
        Ok(Self {
            graph: GraphProto {
                name: name.into(),
                ..Default::default()
            },
            data: BufWriter::with_capacity(1 << 20, file),
            data_path: data_path.to_path_buf(),
            data_name: data_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            offset: 0,
        })
    }

    /// Appends a node; outputs are named `{name}/output_{k}` unless given.
    pub fn node(
        &mut self,
        op_type: &str,
        domain: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[(&str, Attr)],
    ) {
        let attribute = attrs
            .iter()
            .map(|(n, a)| {
                let mut p = AttributeProto {
                    name: (*n).into(),
                    ..Default::default()
                };
                match a {
                    Attr::Int(v) => {
                        p.i = *v;
                        p.r#type = attribute_type::INT;
                    }
                    Attr::Float(v) => {
                        p.f = *v;
                        p.r#type = attribute_type::FLOAT;
                    }
                    Attr::Ints(v) => {
                        p.ints = v.clone();
                        p.r#type = attribute_type::INTS;
                    }
                }
                p
            })
            .collect();
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: name.into(),
            op_type: op_type.into(),
            attribute,
            domain: domain.into(),
        });
    }

    /// Adds an initializer; its bytes go to the external file unless they are tiny.
    pub fn initializer(
        &mut self,
        name: &str,
        data_type: i32,
        dims: &[usize],
        bytes: &[u8],
    ) -> Result<()> {
        let mut t = TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type,
            name: name.into(),
            ..Default::default()
        };
        if bytes.len() <= INLINE_LIMIT {
            t.raw_data = bytes.to_vec();
        } else {
            let pad = (ALIGN - self.offset % ALIGN) % ALIGN;
            let io = |e| ExportError::io(&self.data_path, e);
            self.data.write_all(&vec![0u8; pad as usize]).map_err(io)?;
            let start = self.offset + pad;
            self.data
                .write_all(bytes)
                .map_err(|e| ExportError::io(&self.data_path, e))?;
            self.offset = start + bytes.len() as u64;
            let entry = |k: &str, v: String| StringStringEntryProto {
                key: k.into(),
                value: v,
            };
            t.external_data = vec![
                entry("location", self.data_name.clone()),
                entry("offset", start.to_string()),
                entry("length", bytes.len().to_string()),
            ];
            t.data_location = 1;
        }
        self.graph.initializer.push(t);
        Ok(())
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem_type: i32, dims: &[Dim]) {
        self.graph.input.push(value_info(name, elem_type, dims));
    }

    /// Declares a graph output.
    pub fn output(&mut self, name: &str, elem_type: i32, dims: &[Dim]) {
        self.graph.output.push(value_info(name, elem_type, dims));
    }

    /// Flushes the external data and returns the graph.
    pub fn finish(mut self) -> Result<GraphProto> {
        self.data
            .flush()
            .map_err(|e| ExportError::io(&self.data_path, e))?;
        Ok(self.graph)
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => DimensionValue::DimValue(*n as i64),
                Dim::Named(s) => DimensionValue::DimParam((*s).into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}
