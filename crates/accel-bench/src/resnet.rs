//! ResNet-50 and ResNet-152 (torchvision's v1.5 architecture: stride on the
//! 3×3 convolution of each bottleneck, batch norm folded into conv biases)
//! with random He-initialised weights.

use crate::onnx_builder::{GraphBuilder, INPUT};
use prost::Message;

fn bottleneck(g: &mut GraphBuilder, x: &str, cin: i64, width: i64, stride: i64) -> String {
    let cout = width * 4;
    let a = g.conv(x, cin, width, 1, 1);
    let a = g.relu(&a);
    let b = g.conv(&a, width, width, 3, stride);
    let b = g.relu(&b);
    let c = g.conv(&b, width, cout, 1, 1);
    let shortcut = if stride != 1 || cin != cout {
        g.conv(x, cin, cout, 1, stride)
    } else {
        x.to_string()
    };
    let s = g.add(&c, &shortcut);
    g.relu(&s)
}

/// A ResNet with the given blocks per stage (`[3, 4, 6, 3]` is ResNet-50,
/// `[3, 8, 36, 3]` ResNet-152), as serialized ONNX bytes. Input `input`
/// `[N, 3, 224, 224]`, output `output` `[N, 1000]` logits.
pub fn resnet(blocks: [usize; 4], seed: u64) -> Vec<u8> {
    let mut g = GraphBuilder::new(seed);
    let x = g.conv(INPUT, 3, 64, 7, 2);
    let x = g.relu(&x);
    let mut x = g.max_pool(&x, 3, 2);
    let mut cin = 64;
    for (stage, &n) in blocks.iter().enumerate() {
        let width = 64 << stage;
        for i in 0..n {
            let stride = if i == 0 && stage > 0 { 2 } else { 1 };
            x = bottleneck(&mut g, &x, cin, width, stride);
            cin = width * 4;
        }
    }
    let x = g.global_pool_flatten(&x);
    let logits = g.dense(&x, 2048, 1000);
    g.finish(&[3, 224, 224], &logits, &[1000]).encode_to_vec()
}

/// ResNet-50.
pub fn resnet50(seed: u64) -> Vec<u8> {
    resnet([3, 4, 6, 3], seed)
}
