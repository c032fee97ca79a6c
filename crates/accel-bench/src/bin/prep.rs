//! Where preprocessing time goes, stage by stage and decoder by decoder, on
//! one thread: JPEG decode (the `image` crate's path, zune-jpeg direct,
//! jpeg-decoder at full and reduced DCT scale), crop-window resize, and the
//! float conversion. Printed as a Markdown table for docs/PERFORMANCE.md.
//!
//!     cargo run -q -p accel-bench --bin prep -- --runs 300

use accel_bench::stats::percentile;
use accel_core::spec::Preset;
use accel_runtime::image::preprocess::resize_rgb;
use accel_runtime::image::{decode_rgb, preprocess_into};
use accel_runtime::Limits;
use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

/// Preprocessing breakdown benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Timed runs per row (after warm-up).
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Photos to measure.
    #[arg(default_values = ["fixtures/images/sklearn_china.jpg"])]
    images: Vec<PathBuf>,
    /// Also measure the first photo upscaled this many times (re-encoded
    /// as a quality-92 JPEG), as a phone camera's large photo; 0: no.
    #[arg(long, default_value_t = 4)]
    upscale: u32,
}

fn time(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..runs / 10 + 2 {
        f();
    }
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (percentile(&mut v, 50.0), percentile(&mut v, 99.0))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec = Preset::Torchvision
        .spec()
        .preprocess
        .expect("the torchvision preset has preprocessing");
    let limits = Limits::default();
    println!("| photo | stage | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|");
    let mut photos = Vec::new();
    for path in &args.images {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        photos.push((name.to_string(), std::fs::read(path)?));
    }
    if args.upscale > 1 {
        let (name, bytes) = photos.first().cloned().context("no photo")?;
        let img = decode_rgb(&bytes, &limits)?;
        let src = image::RgbImage::from_raw(img.width, img.height, img.pixels).context("size")?;
        let (w, h) = (img.width * args.upscale, img.height * args.upscale);
        let big = image::imageops::resize(&src, w, h, image::imageops::FilterType::Triangle);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 92).encode_image(&big)?;
        photos.push((format!("{name} ×{} q92", args.upscale), jpeg));
    }
    for (name, bytes) in &photos {
        let bytes = bytes.as_slice();
        let img = decode_rgb(bytes, &limits)?;
        let mut out = vec![0f32; 3 * 224 * 224];
        let row = |stage: &str, (p50, p99): (f64, f64)| {
            println!(
                "| {name} ({}×{}) | {stage} | {p50:.3} | {p99:.3} |",
                img.width, img.height
            );
        };
        row(
            "decode: accel (image crate → zune-jpeg)",
            time(args.runs, || {
                decode_rgb(bytes, &limits).unwrap();
            }),
        );
        row(
            "decode: zune-jpeg direct",
            time(args.runs, || {
                let opts = zune_core::options::DecoderOptions::default()
                    .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB);
                let mut d = zune_jpeg::JpegDecoder::new_with_options(
                    zune_core::bytestream::ZCursor::new(bytes),
                    opts,
                );
                d.decode().unwrap();
            }),
        );
        row(
            "decode: jpeg-decoder full",
            time(args.runs, || {
                let mut d = jpeg_decoder::Decoder::new(bytes);
                d.decode().unwrap();
            }),
        );
        for (label, scale) in [("1/2", 2u16), ("1/4", 4)] {
            row(
                &format!("decode: jpeg-decoder DCT scale {label}"),
                time(args.runs, || {
                    let mut d = jpeg_decoder::Decoder::new(bytes);
                    d.read_info().unwrap();
                    let info = d.info().unwrap();
                    d.scale(info.width / scale, info.height / scale).unwrap();
                    d.decode().unwrap();
                }),
            );
        }
        row(
            "resize + crop (crop window only)",
            time(args.runs, || {
                resize_rgb(&img, &spec.resize).unwrap();
            }),
        );
        row(
            "resize + crop + normalize",
            time(args.runs, || {
                preprocess_into(&img, &spec, &mut out).unwrap();
            }),
        );
        row(
            "all, as served: decode + resize + normalize",
            time(args.runs, || {
                let img = decode_rgb(bytes, &limits).unwrap();
                preprocess_into(&img, &spec, &mut out).unwrap();
            }),
        );
    }
    Ok(())
}
