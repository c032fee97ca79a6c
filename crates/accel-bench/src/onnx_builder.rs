//! A small ONNX graph builder over tract's generated protobuf types (prost),
//! enough to write convolutional networks.

use tract_onnx::pb;

/// Deterministic pseudo-random normal numbers (xorshift64* + Box-Muller).
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A sample of N(0, std²).
    pub fn normal(&mut self, std: f64) -> f32 {
        let (u1, u2) = (self.next_f64(), self.next_f64());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
    }
}

/// Accumulates nodes and initializers.
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    rng: Rng,
    counter: usize,
}

fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => Value::DimValue(*v),
                                None => Value::DimParam("N".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl GraphBuilder {
    /// An empty graph whose weights come from `seed`.
    pub fn new(seed: u64) -> Self {
        GraphBuilder {
            nodes: vec![],
            initializers: vec![],
            rng: Rng::new(seed),
            counter: 0,
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    fn weight(&mut self, dims: &[i64], std: f64) -> String {
        let name = self.fresh("w");
        let n: i64 = dims.iter().product();
        let data = (0..n).map(|_| self.rng.normal(std)).collect();
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: data,
            ..Default::default()
        });
        name
    }

    fn node(&mut self, op: &str, inputs: Vec<String>, attrs: Vec<pb::AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name: out.clone(),
            input: inputs,
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// Conv with bias, He-initialised weights, `k`×`k` kernel, same padding.
    pub fn conv(&mut self, x: &str, cin: i64, cout: i64, k: i64, stride: i64) -> String {
        let w = self.weight(&[cout, cin, k, k], (2.0 / (cin * k * k) as f64).sqrt());
        let b = self.weight(&[cout], 0.01);
        let p = k / 2;
        self.node(
            "Conv",
            vec![x.into(), w, b],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[stride, stride]),
                attr_ints("pads", &[p, p, p, p]),
            ],
        )
    }

    /// ReLU.
    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", vec![x.into()], vec![])
    }

    /// Elementwise sum.
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", vec![a.into(), b.into()], vec![])
    }

    /// Max pooling, `k`×`k`, padding `k/2`.
    pub fn max_pool(&mut self, x: &str, k: i64, stride: i64) -> String {
        let p = k / 2;
        self.node(
            "MaxPool",
            vec![x.into()],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[stride, stride]),
                attr_ints("pads", &[p, p, p, p]),
            ],
        )
    }

    /// Global average pooling then flatten to `[N, C]`.
    pub fn global_pool_flatten(&mut self, x: &str) -> String {
        let g = self.node("GlobalAveragePool", vec![x.into()], vec![]);
        self.node("Flatten", vec![g], vec![attr_int("axis", 1)])
    }

    /// Fully connected `[N, cin] -> [N, cout]` (Gemm with transposed weights).
    pub fn dense(&mut self, x: &str, cin: i64, cout: i64) -> String {
        let w = self.weight(&[cout, cin], (1.0 / cin as f64).sqrt());
        let b = self.weight(&[cout], 0.01);
        self.node("Gemm", vec![x.into(), w, b], vec![attr_int("transB", 1)])
    }

    /// Finishes the model: one input `input` `[N, ...]`, one output `output`.
    pub fn finish(mut self, input_dims: &[i64], last: &str, output_dims: &[i64]) -> pb::ModelProto {
        // Rename the first consumer's input and the last producer's output.
        for n in &mut self.nodes {
            for i in &mut n.input {
                if i == "__input__" {
                    *i = "input".into();
                }
            }
            for o in &mut n.output {
                if o == last {
                    *o = "output".into();
                }
            }
        }
        let dims = |d: &[i64]| -> Vec<Option<i64>> {
            std::iter::once(None)
                .chain(d.iter().map(|v| Some(*v)))
                .collect()
        };
        pb::ModelProto {
            ir_version: 7,
            producer_name: "accel-bench".into(),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "graph".into(),
                node: self.nodes,
                initializer: self.initializers,
                input: vec![value_info("input", &dims(input_dims))],
                output: vec![value_info("output", &dims(output_dims))],
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The name to use for the graph input in builder calls.
pub const INPUT: &str = "__input__";
