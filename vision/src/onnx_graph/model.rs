//! ONNX's `ModelProto` as the rewriter sees it: the top-level graph's nodes and initializers
//! are read into [`Node`]s and [`Tensor`]s; every other field (opsets, metadata such as the
//! recogniser's dictionary, value infos, doc strings) is kept as the file had it.
//! Field numbers are those of `onnx/onnx.proto`.

use std::borrow::Cow;
use std::collections::HashSet;

use super::tensor::text;
pub use super::tensor::{Tensor, FLOAT};
use super::wire::{self, Field, WireError};

const MODEL_IR_VERSION: u32 = 1;
const MODEL_GRAPH: u32 = 7;
const MODEL_OPSET_IMPORT: u32 = 8;
const MODEL_METADATA_PROPS: u32 = 14;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const GRAPH_VALUE_INFO: u32 = 13;
const VALUE_INFO_NAME: u32 = 1;
const VALUE_INFO_TYPE: u32 = 2;
/// `TypeProto.tensor_type`.
const TYPE_TENSOR: u32 = 1;
const TENSOR_TYPE_ELEM_TYPE: u32 = 1;
const TENSOR_TYPE_SHAPE: u32 = 2;
const SHAPE_DIM: u32 = 1;
const DIM_VALUE: u32 = 1;
const DIM_PARAM: u32 = 2;
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
const NODE_DOMAIN: u32 = 7;
const ATTR_NAME: u32 = 1;
const ATTR_F: u32 = 2;
const ATTR_I: u32 = 3;
const ATTR_S: u32 = 4;
const ATTR_T: u32 = 5;
const ATTR_G: u32 = 6;
const ATTR_INTS: u32 = 8;
const ATTR_GRAPHS: u32 = 11;
const ATTR_TYPE: u32 = 20;
const ATTR_TYPE_FLOAT: u64 = 1;
const ATTR_TYPE_INT: u64 = 2;
const ATTR_TYPE_INTS: u64 = 7;
const ATTR_TYPE_TENSOR: u64 = 4;
const ATTR_TYPE_GRAPH: u64 = 5;
const OPSET_DOMAIN: u32 = 1;
const OPSET_VERSION: u32 = 2;

/// Why a file cannot be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("{0} is not UTF-8 text")]
    NotText(&'static str),
    /// The graph is not one a change can be made to (what, and why).
    #[error("{0}")]
    Unsupported(String),
}

/// A whole `.onnx` file.
#[derive(Debug, Clone)]
pub struct OnnxModel<'a> {
    /// The model's fields with the graph's taken out (it is written back at `graph_at`).
    fields: Vec<Field<'a>>,
    graph_at: usize,
    pub graph: Graph<'a>,
}

impl<'a> OnnxModel<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<OnnxModel<'a>, GraphError> {
        let mut fields = wire::parse(bytes)?;
        let graph_at = fields
            .iter()
            .position(|f| f.number == MODEL_GRAPH)
            .ok_or(GraphError::NoGraph)?;
        let graph_field = fields.remove(graph_at);
        let graph = match graph_field.value {
            wire::Value::Bytes(Cow::Borrowed(b)) => Graph::parse(b)?,
            _ => return Err(GraphError::NoGraph),
        };
        Ok(OnnxModel {
            fields,
            graph_at,
            graph,
        })
    }

    /// A model of one graph (opset `opset` of the default domain) with float32 `inputs` of the
    /// given shapes (-1: dynamic) and float32 `outputs`: for tests and tools that make models.
    pub fn build(
        opset: u64,
        inputs: &[(&str, &[i64])],
        outputs: &[&str],
        nodes: Vec<Node<'a>>,
        initializers: Vec<Tensor<'a>>,
    ) -> OnnxModel<'a> {
        let mut other = vec![Field::string(2, "graph")];
        other.extend(
            inputs
                .iter()
                .map(|(n, d)| float_value_info(GRAPH_INPUT, n, Some(d))),
        );
        other.extend(
            outputs
                .iter()
                .map(|n| float_value_info(GRAPH_OUTPUT, n, None)),
        );
        let opset_import = wire::encode(&[Field::string(1, ""), Field::varint(2, opset)]);
        OnnxModel {
            fields: vec![
                Field::varint(MODEL_IR_VERSION, 8),
                Field::bytes(MODEL_OPSET_IMPORT, opset_import),
            ],
            graph_at: 1,
            graph: Graph {
                nodes,
                initializers,
                inputs: inputs.iter().map(|(n, _)| n.to_string()).collect(),
                outputs: outputs.iter().map(|n| n.to_string()).collect(),
                other,
            },
        }
    }

    /// The value of the model's `metadata_props` entry `key` (e.g. PP-OCR's recogniser keeps
    /// its dictionary under `character`), read without loading the model into a runtime.
    pub fn metadata(&self, key: &str) -> Result<Option<String>, GraphError> {
        for f in self
            .fields
            .iter()
            .filter(|f| f.number == MODEL_METADATA_PROPS)
        {
            let entry = wire::parse(f.as_bytes().ok_or(GraphError::NotText("metadata entry"))?)?;
            let text_of = |number| entry.iter().find(|g| g.number == number);
            if text_of(1).and_then(Field::as_str) == Some(key) {
                return match text_of(2) {
                    Some(v) => text(v, "metadata value").map(Some),
                    None => Ok(Some(String::new())),
                };
            }
        }
        Ok(None)
    }

    /// The opset version the model imports for `domain` (`""`: the default, `ai.onnx`).
    pub fn opset(&self, domain: &str) -> Option<u64> {
        self.fields
            .iter()
            .filter(|f| f.number == MODEL_OPSET_IMPORT)
            .filter_map(|f| wire::parse(f.as_bytes()?).ok())
            .find(|id| {
                let d = id
                    .iter()
                    .find(|g| g.number == OPSET_DOMAIN)
                    .and_then(Field::as_str)
                    .unwrap_or("");
                d == domain || (domain.is_empty() && d == "ai.onnx")
            })
            .and_then(|id| {
                id.iter()
                    .find(|g| g.number == OPSET_VERSION)
                    .and_then(Field::as_varint)
            })
    }

    /// Makes the model import opset `version` of the default domain (its `ai.onnx` entry
    /// replaced, or one added). The caller answers for every node meaning the same there.
    pub fn set_default_opset(&mut self, version: u64) {
        let is_default = |f: &Field<'_>| {
            f.number == MODEL_OPSET_IMPORT
                && f.as_bytes()
                    .and_then(|b| wire::parse(b).ok())
                    .is_some_and(|id| {
                        let d = id.iter().find(|g| g.number == OPSET_DOMAIN);
                        matches!(d.and_then(Field::as_str), None | Some("") | Some("ai.onnx"))
                    })
        };
        let entry = Field::bytes(
            MODEL_OPSET_IMPORT,
            wire::encode(&[
                Field::string(OPSET_DOMAIN, ""),
                Field::varint(OPSET_VERSION, version),
            ]),
        );
        match self.fields.iter().position(is_default) {
            Some(at) => self.fields[at] = entry,
            None => self.fields.push(entry),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut fields = self.fields.clone();
        fields.insert(
            self.graph_at,
            Field::bytes(MODEL_GRAPH, self.graph.encode()),
        );
        wire::encode(&fields)
    }
}

/// A `ValueInfoProto` field (`number`: the graph's input or output list) of a float32 tensor
/// named `name`, of the given shape (-1: a dynamic dimension) or of no declared shape.
fn float_value_info(number: u32, name: &str, dims: Option<&[i64]>) -> Field<'static> {
    let mut tensor_type = vec![Field::varint(TENSOR_TYPE_ELEM_TYPE, FLOAT as u64)];
    if let Some(dims) = dims {
        let dim = |&d: &i64| {
            let v = if d >= 0 {
                Field::varint(DIM_VALUE, d as u64)
            } else {
                Field::string(DIM_PARAM, "n")
            };
            Field::bytes(SHAPE_DIM, wire::encode(&[v]))
        };
        let shape: Vec<Field<'_>> = dims.iter().map(dim).collect();
        tensor_type.push(Field::bytes(TENSOR_TYPE_SHAPE, wire::encode(&shape)));
    }
    let type_proto = wire::encode(&[Field::bytes(TYPE_TENSOR, wire::encode(&tensor_type))]);
    let info = [
        Field::string(VALUE_INFO_NAME, name),
        Field::bytes(VALUE_INFO_TYPE, type_proto),
    ];
    Field::bytes(number, wire::encode(&info))
}

/// The names a graph uses, and fresh ones for the tensors a change adds.
pub(super) struct Names(HashSet<String>);

impl Names {
    pub(super) fn of(g: &Graph<'_>) -> Names {
        let mut set: HashSet<String> = g.initializers.iter().map(|t| t.name.clone()).collect();
        set.extend(g.inputs.iter().cloned());
        for n in &g.nodes {
            set.extend(n.inputs.iter().chain(&n.outputs).cloned());
        }
        Names(set)
    }

    /// A name no tensor of the graph has: `{base}/smartpipe_{what}{k}` for the first free `k`.
    pub(super) fn fresh(&mut self, base: &str, what: &str) -> String {
        let mut k = 0;
        loop {
            let name = format!("{base}/smartpipe_{what}{k}");
            if self.0.insert(name.clone()) {
                return name;
            }
            k += 1;
        }
    }
}

/// The top-level graph.
#[derive(Debug, Clone)]
pub struct Graph<'a> {
    pub nodes: Vec<Node<'a>>,
    pub initializers: Vec<Tensor<'a>>,
    /// Names of the graph's inputs (an initializer listed here can be fed at run time).
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// The graph's other fields: name, inputs, outputs, value infos, …
    other: Vec<Field<'a>>,
}

fn value_info_name(f: &Field<'_>) -> Result<String, GraphError> {
    let b = f.as_bytes().ok_or(GraphError::NotText("value info"))?;
    wire::parse(b)?
        .iter()
        .find(|g| g.number == VALUE_INFO_NAME)
        .map(|g| text(g, "value info name"))
        .unwrap_or(Ok(String::new()))
}

impl<'a> Graph<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Graph<'a>, GraphError> {
        let mut g = Graph {
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            other: Vec::new(),
        };
        for f in wire::parse(bytes)? {
            match (f.number, &f.value) {
                (GRAPH_NODE, wire::Value::Bytes(Cow::Borrowed(b))) => g.nodes.push(Node::parse(b)?),
                (GRAPH_INITIALIZER, wire::Value::Bytes(Cow::Borrowed(b))) => {
                    g.initializers.push(Tensor::parse(b)?)
                }
                (GRAPH_INPUT, _) => {
                    g.inputs.push(value_info_name(&f)?);
                    g.other.push(f);
                }
                (GRAPH_OUTPUT, _) => {
                    g.outputs.push(value_info_name(&f)?);
                    g.other.push(f);
                }
                _ => g.other.push(f),
            }
        }
        Ok(g)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = wire::encode(&self.other);
        for n in &self.nodes {
            wire::write(&[Field::bytes(GRAPH_NODE, n.encode())], &mut out);
        }
        for t in &self.initializers {
            wire::write(&[Field::bytes(GRAPH_INITIALIZER, t.encode())], &mut out);
        }
        out
    }

    /// Declares graph output `name` a float32 tensor of no fixed shape (a head appended to
    /// the output changes its shape); false if the graph has no such output.
    pub fn declare_float_output(&mut self, name: &str) -> bool {
        let Some(at) = self
            .other
            .iter()
            .position(|f| f.number == GRAPH_OUTPUT && value_info_name(f).is_ok_and(|n| n == name))
        else {
            return false;
        };
        self.other[at] = float_value_info(GRAPH_OUTPUT, name, None);
        true
    }

    /// Makes `names` the graph's outputs, in that order, as float32 tensors of no declared
    /// shape, in place of the outputs it had.
    pub fn set_float_outputs(&mut self, names: &[String]) {
        self.other.retain(|f| f.number != GRAPH_OUTPUT);
        self.other.extend(
            names
                .iter()
                .map(|n| float_value_info(GRAPH_OUTPUT, n, None)),
        );
        self.outputs = names.to_vec();
    }

    /// The element types the graph's inputs and outputs declare (`TensorProto.DataType`
    /// numbers; a value info without a tensor type gives none).
    pub fn io_elem_types(&self) -> Vec<i64> {
        self.other
            .iter()
            .filter(|f| f.number == GRAPH_INPUT || f.number == GRAPH_OUTPUT)
            .filter_map(|f| {
                read_tensor_type(f, |tensor| {
                    let elem = tensor.iter().find(|g| g.number == TENSOR_TYPE_ELEM_TYPE)?;
                    Some(elem.as_varint()? as i64)
                })
            })
            .collect()
    }

    /// How many axes graph input `name` declares; none when it is not an input or its type
    /// gives no shape.
    pub fn input_rank(&self, name: &str) -> Option<usize> {
        let field = self
            .other
            .iter()
            .find(|f| f.number == GRAPH_INPUT && value_info_name(f).is_ok_and(|n| n == name))?;
        read_tensor_type(field, |tensor| {
            let shape = tensor.iter().find(|g| g.number == TENSOR_TYPE_SHAPE)?;
            let shape = wire::parse(shape.as_bytes()?).ok()?;
            Some(shape.iter().filter(|g| g.number == SHAPE_DIM).count())
        })
    }

    /// A node holds a subgraph (the body of an `If`, `Loop` or `Scan`).
    pub fn has_subgraph(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.attributes.iter().any(Attribute::has_subgraph))
    }

    /// No subgraphs and no initializer data in other files: a graph the rewrites may change.
    pub fn is_self_contained(&self) -> bool {
        !self.has_subgraph() && !self.initializers.iter().any(Tensor::is_external)
    }

    /// Drops the value infos (shape annotations) of tensors that `keep` says no longer exist.
    pub fn retain_value_infos(&mut self, keep: impl Fn(&str) -> bool) {
        self.other.retain(|f| {
            f.number != GRAPH_VALUE_INFO || value_info_name(f).map(|n| keep(&n)).unwrap_or(true)
        });
    }
}

/// `read` of the tensor type's fields (`TypeProto.tensor_type`) of value info `f`; none when
/// the value info has no tensor type.
fn read_tensor_type<T>(f: &Field<'_>, read: impl FnOnce(&[Field<'_>]) -> Option<T>) -> Option<T> {
    let info = wire::parse(f.as_bytes()?).ok()?;
    let ty = info.iter().find(|g| g.number == VALUE_INFO_TYPE)?;
    let ty = wire::parse(ty.as_bytes()?).ok()?;
    let tensor = ty.iter().find(|g| g.number == TYPE_TENSOR)?;
    read(&wire::parse(tensor.as_bytes()?).ok()?)
}

/// One node.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<Attribute<'a>>,
    /// Name, doc string, …
    other: Vec<Field<'a>>,
}

impl<'a> Node<'a> {
    pub fn new(op_type: &str, inputs: Vec<String>, outputs: Vec<String>) -> Node<'static> {
        Node {
            op_type: op_type.into(),
            domain: String::new(),
            inputs,
            outputs,
            attributes: Vec::new(),
            other: Vec::new(),
        }
    }

    fn parse(bytes: &'a [u8]) -> Result<Node<'a>, GraphError> {
        let mut n = Node::new("", Vec::new(), Vec::new());
        let mut other = Vec::new();
        for f in wire::parse(bytes)? {
            match f.number {
                NODE_INPUT => n.inputs.push(text(&f, "node input")?),
                NODE_OUTPUT => n.outputs.push(text(&f, "node output")?),
                NODE_OP_TYPE => n.op_type = text(&f, "op type")?,
                NODE_DOMAIN => n.domain = text(&f, "node domain")?,
                NODE_ATTRIBUTE => match f.value {
                    wire::Value::Bytes(Cow::Borrowed(b)) => n.attributes.push(Attribute::parse(b)?),
                    _ => return Err(GraphError::NotText("attribute")),
                },
                _ => other.push(f),
            }
        }
        Ok(Node { other, ..n })
    }

    fn encode(&self) -> Vec<u8> {
        let mut fields: Vec<Field<'_>> = Vec::new();
        fields.extend(self.inputs.iter().map(|s| Field::string(NODE_INPUT, s)));
        fields.extend(self.outputs.iter().map(|s| Field::string(NODE_OUTPUT, s)));
        fields.push(Field::string(NODE_OP_TYPE, &self.op_type));
        if !self.domain.is_empty() {
            fields.push(Field::string(NODE_DOMAIN, &self.domain));
        }
        fields.extend(
            self.attributes
                .iter()
                .map(|a| Field::bytes(NODE_ATTRIBUTE, wire::encode(&a.fields))),
        );
        fields.extend(self.other.iter().cloned());
        wire::encode(&fields)
    }

    /// An operator of the default (`ai.onnx`) domain.
    pub fn is(&self, op_type: &str) -> bool {
        self.op_type == op_type && (self.domain.is_empty() || self.domain == "ai.onnx")
    }

    pub fn attr(&self, name: &str) -> Option<&Attribute<'a>> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

/// One attribute of a node.
#[derive(Debug, Clone)]
pub struct Attribute<'a> {
    pub name: String,
    fields: Vec<Field<'a>>,
}

impl<'a> Attribute<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Attribute<'a>, GraphError> {
        let fields = wire::parse(bytes)?;
        let name = match fields.iter().find(|f| f.number == ATTR_NAME) {
            Some(f) => text(f, "attribute name")?,
            None => String::new(),
        };
        Ok(Attribute { name, fields })
    }

    /// An attribute holding `value` (a field numbered for its type) of type `kind`.
    fn with_value(name: &str, value: Field<'static>, kind: u64) -> Attribute<'static> {
        Attribute {
            name: name.into(),
            fields: vec![
                Field::string(ATTR_NAME, name),
                value,
                Field::varint(ATTR_TYPE, kind),
            ],
        }
    }

    /// A `FLOAT` attribute.
    pub fn new_float(name: &str, v: f32) -> Attribute<'static> {
        Attribute::with_value(name, Field::fixed32(ATTR_F, v.to_bits()), ATTR_TYPE_FLOAT)
    }

    /// An `INT` attribute.
    pub fn new_int(name: &str, v: i64) -> Attribute<'static> {
        Attribute::with_value(name, Field::varint(ATTR_I, v as u64), ATTR_TYPE_INT)
    }

    /// A `TENSOR` attribute (a `Constant`'s `value`).
    pub fn new_tensor(name: &str, t: &Tensor<'_>) -> Attribute<'static> {
        Attribute::with_value(name, Field::bytes(ATTR_T, t.encode()), ATTR_TYPE_TENSOR)
    }

    /// A `GRAPH` attribute holding a graph of these fields (for tests of code that must leave
    /// subgraphs alone).
    pub fn new_graph(name: &str, graph: &[Field<'_>]) -> Attribute<'static> {
        Attribute::with_value(
            name,
            Field::bytes(ATTR_G, wire::encode(graph)),
            ATTR_TYPE_GRAPH,
        )
    }

    /// An `INTS` attribute.
    pub fn new_ints(name: &str, v: &[i64]) -> Attribute<'static> {
        Attribute::with_value(name, wire::packed_ints(ATTR_INTS, v), ATTR_TYPE_INTS)
    }

    fn field(&self, number: u32) -> Option<&Field<'a>> {
        self.fields.iter().find(|f| f.number == number)
    }

    pub fn int(&self) -> Option<i64> {
        self.field(ATTR_I)?.as_varint().map(|v| v as i64)
    }

    pub fn float(&self) -> Option<f32> {
        self.field(ATTR_F)?.as_fixed32().map(f32::from_bits)
    }

    pub fn ints(&self) -> Option<Vec<i64>> {
        wire::repeated_ints(&self.fields, ATTR_INTS).ok()
    }

    pub fn string(&self) -> Option<&str> {
        self.field(ATTR_S)?.as_str()
    }

    pub fn tensor(&self) -> Option<Tensor<'_>> {
        Tensor::parse(self.field(ATTR_T)?.as_bytes()?).ok()
    }

    /// Holds a subgraph (the body of an `If`, `Loop` or `Scan`).
    pub fn has_subgraph(&self) -> bool {
        self.fields
            .iter()
            .any(|f| f.number == ATTR_G || f.number == ATTR_GRAPHS)
    }
}
