//! The ONNX file format, written: a [`Graph`] of nodes over named values
//! and float initializers, encoded as ONNX's `ModelProto` protobuf (the
//! fields of `onnx.proto` that a float inference graph needs). It knows
//! nothing of models: `crate::models::onnx` says what each backbone's
//! graph is.

use anyhow::Result;
use std::path::Path;
use tch::{Kind, Tensor};

/// The operator set the graphs are written for.
pub const OPSET: i64 = 17;
/// ONNX's IR version of opset 17.
const IR_VERSION: i64 = 8;
/// `TensorProto.DataType`.
const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// A node attribute's value.
#[derive(Debug, Clone)]
pub enum Attribute {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

struct Node {
    op_type: &'static str,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attributes: Vec<(&'static str, Attribute)>,
}

struct Initializer {
    name: String,
    dims: Vec<i64>,
    /// Little-endian values of `data_type`.
    raw: Vec<u8>,
    data_type: i64,
}

/// A graph under construction: one float input `[batch, …]` whose first
/// dimension is named (any batch size), nodes in execution order, one
/// float output.
pub struct Graph {
    name: String,
    nodes: Vec<Node>,
    initializers: Vec<Initializer>,
    input: (String, Vec<i64>),
    output: Option<(String, Vec<i64>)>,
    metadata: Vec<(String, String)>,
    fresh: usize,
}

impl Graph {
    /// A graph whose input `input` is `[batch, shape…]`.
    pub fn new(name: &str, input: &str, shape: &[i64]) -> Self {
        Self {
            name: name.to_owned(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            input: (input.to_owned(), shape.to_vec()),
            output: None,
            metadata: Vec::new(),
            fresh: 0,
        }
    }

    /// The graph's input value.
    pub fn input(&self) -> String {
        self.input.0.clone()
    }

    /// A float tensor as an initializer named `name` (a checkpoint's name
    /// keeps the file readable), returned as a value.
    pub fn weight(&mut self, name: &str, tensor: &Tensor) -> String {
        let values = tensor.to_kind(Kind::Float).contiguous().flatten(0, -1);
        let values: Vec<f32> = Vec::<f32>::try_from(&values).expect("a float tensor's values");
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(Initializer { name: name.to_owned(), dims: tensor.size(), raw, data_type: FLOAT });
        name.to_owned()
    }

    /// A float constant of `values` shaped `dims`.
    pub fn constant(&mut self, values: &[f32], dims: &[i64]) -> String {
        let name = self.fresh_name("const");
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(Initializer { name: name.clone(), dims: dims.to_vec(), raw, data_type: FLOAT });
        name
    }

    /// An int64 constant (shapes, axes).
    pub fn int_constant(&mut self, values: &[i64]) -> String {
        let name = self.fresh_name("shape");
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dims = vec![values.len() as i64];
        self.initializers.push(Initializer { name: name.clone(), dims, raw, data_type: INT64 });
        name
    }

    /// Appends a node of `op_type` over `inputs` (an empty name: an omitted
    /// optional input); returns its one output.
    pub fn node(
        &mut self,
        op_type: &'static str,
        inputs: &[&str],
        attributes: Vec<(&'static str, Attribute)>,
    ) -> String {
        let output = self.fresh_name(op_type);
        self.nodes.push(Node {
            op_type,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.clone()],
            attributes,
        });
        output
    }

    /// Makes `value` the graph's output, renamed `name`, `[batch, shape…]`.
    pub fn set_output(&mut self, value: &str, name: &str, shape: &[i64]) {
        self.nodes.push(Node {
            op_type: "Identity",
            inputs: vec![value.to_owned()],
            outputs: vec![name.to_owned()],
            attributes: Vec::new(),
        });
        self.output = Some((name.to_owned(), shape.to_vec()));
    }

    /// A key and value stored in the model's `metadata_props`.
    pub fn add_metadata(&mut self, key: &str, value: &str) {
        self.metadata.push((key.to_owned(), value.to_owned()));
    }

    /// The number of nodes so far.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn fresh_name(&mut self, what: &str) -> String {
        self.fresh += 1;
        format!("{what}_{}", self.fresh)
    }

    /// The `ModelProto` bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut model = Message::default();
        model.int(1, IR_VERSION);
        model.string(2, "tchlab");
        model.string(3, env!("CARGO_PKG_VERSION"));
        model.message(7, &self.graph_message());
        let mut opset = Message::default();
        opset.string(1, "");
        opset.int(2, OPSET);
        model.message(8, &opset);
        for (key, value) in &self.metadata {
            let mut entry = Message::default();
            entry.string(1, key);
            entry.string(2, value);
            model.message(14, &entry);
        }
        model.bytes
    }

    /// Writes the model to `path` (whole or not at all).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::persist::write_atomically(path, &self.encode())
    }

    fn graph_message(&self) -> Message {
        let mut graph = Message::default();
        for node in &self.nodes {
            graph.message(1, &node_message(node));
        }
        graph.string(2, &self.name);
        for initializer in &self.initializers {
            graph.message(5, &tensor_message(initializer));
        }
        graph.message(11, &value_info(&self.input.0, &self.input.1));
        let (name, shape) = self.output.as_ref().expect("a graph's output is set before it is written");
        graph.message(12, &value_info(name, shape));
        graph
    }
}

fn node_message(node: &Node) -> Message {
    let mut message = Message::default();
    node.inputs.iter().for_each(|input| message.string(1, input));
    node.outputs.iter().for_each(|output| message.string(2, output));
    message.string(4, node.op_type);
    for (name, value) in &node.attributes {
        let mut attribute = Message::default();
        attribute.string(1, name);
        match value {
            Attribute::Float(f) => {
                attribute.float(2, *f);
                attribute.int(20, 1);
            }
            Attribute::Int(i) => {
                attribute.int(3, *i);
                attribute.int(20, 2);
            }
            Attribute::Ints(values) => {
                values.iter().for_each(|&v| attribute.int(8, v));
                attribute.int(20, 7);
            }
        }
        message.message(5, &attribute);
    }
    message
}

fn tensor_message(initializer: &Initializer) -> Message {
    let mut tensor = Message::default();
    initializer.dims.iter().for_each(|&d| tensor.int(1, d));
    tensor.int(2, initializer.data_type);
    tensor.string(8, &initializer.name);
    tensor.raw(9, &initializer.raw);
    tensor
}

/// A float value `[batch, shape…]`, the batch dimension named.
fn value_info(name: &str, shape: &[i64]) -> Message {
    let mut dims = Message::default();
    let mut batch = Message::default();
    batch.string(2, "batch");
    dims.message(1, &batch);
    for &size in shape {
        let mut dim = Message::default();
        dim.int(1, size);
        dims.message(1, &dim);
    }
    let mut tensor_type = Message::default();
    tensor_type.int(1, FLOAT);
    tensor_type.message(2, &dims);
    let mut type_proto = Message::default();
    type_proto.message(1, &tensor_type);
    let mut info = Message::default();
    info.string(1, name);
    info.message(2, &type_proto);
    info
}

/// Protobuf's wire format, the three kinds of field ONNX needs.
#[derive(Default)]
struct Message {
    bytes: Vec<u8>,
}

impl Message {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.bytes.push(value as u8);
    }

    fn tag(&mut self, field: u32, wire_type: u32) {
        self.varint(u64::from(field << 3 | wire_type));
    }

    /// An int32/int64/enum field (negative values as ten-byte varints).
    fn int(&mut self, field: u32, value: i64) {
        self.tag(field, 0);
        self.varint(value as u64);
    }

    fn float(&mut self, field: u32, value: f32) {
        self.tag(field, 5);
        self.bytes.extend(value.to_le_bytes());
    }

    fn raw(&mut self, field: u32, bytes: &[u8]) {
        self.tag(field, 2);
        self.varint(bytes.len() as u64);
        self.bytes.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, text: &str) {
        self.raw(field, text.as_bytes());
    }

    fn message(&mut self, field: u32, message: &Message) {
        self.raw(field, &message.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_are_protobufs() {
        let mut m = Message::default();
        m.int(1, 150);
        assert_eq!(m.bytes, [0x08, 0x96, 0x01]);
        let mut m = Message::default();
        m.string(2, "testing");
        assert_eq!(m.bytes, [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']);
        let mut m = Message::default();
        m.int(3, -1);
        assert_eq!(m.bytes.len(), 11, "a negative int64 is ten varint bytes after its tag");
        let mut m = Message::default();
        m.float(2, 1.0);
        assert_eq!(m.bytes, [0x15, 0, 0, 0x80, 0x3f]);
    }
}
