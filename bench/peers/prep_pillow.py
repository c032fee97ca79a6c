"""Pillow + numpy preprocessing time, stage by stage, on one thread: the
Python peers' cost for what `prep` (crates/accel-bench/src/bin/prep.rs)
measures for Accel. Same photo, same steps (common.preprocess).

    bench/peers/.venv/bin/python bench/peers/prep_pillow.py --runs 300
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image

import common


def timed(runs: int, fn) -> tuple[float, float]:
    for _ in range(runs // 10 + 2):
        fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
    samples.sort()
    pick = lambda p: samples[max(0, min(len(samples) - 1, int(np.ceil(p / 100 * len(samples))) - 1))]
    return pick(50), pick(99)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("image", nargs="?", default="fixtures/images/sklearn_china.jpg")
    a = ap.parse_args()
    jpeg = open(a.image, "rb").read()

    def decode():
        img = Image.open(io.BytesIO(jpeg)).convert("RGB")
        img.load()
        return img

    img = decode()
    w, h = common.scaled_size(*img.size)

    def resize_crop():
        r = img.resize((w, h), Image.BILINEAR)
        left = int(round((w - common.CROP) / 2.0))
        top = int(round((h - common.CROP) / 2.0))
        return r.crop((left, top, left + common.CROP, top + common.CROP))

    cropped = resize_crop()

    def to_tensor():
        x = np.asarray(cropped, dtype=np.float32).transpose(2, 0, 1) / 255.0
        x = (x - common.MEAN) / common.STD
        return x[np.newaxis].astype(np.float32, copy=False)

    print(f"| photo | stage (Pillow {Image.__version__}, numpy {np.__version__}) | p50 ms | p99 ms |")
    print("|---|---|---:|---:|")
    for stage, fn in [
        ("decode (libjpeg-turbo) + convert RGB", decode),
        ("resize (BILINEAR) + crop", resize_crop),
        ("to float tensor + normalize", to_tensor),
        ("all: common.preprocess", lambda: common.preprocess(jpeg)),
    ]:
        p50, p99 = timed(a.runs, fn)
        print(f"| {a.image.split('/')[-1]} ({img.size[0]}×{img.size[1]}) | {stage} | {p50:.3f} | {p99:.3f} |")


if __name__ == "__main__":
    main()
