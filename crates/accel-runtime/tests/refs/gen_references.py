#!/usr/bin/env python3
"""Generates the reference data the runtime tests compare against.

Everything here is computed by other people's code: Pillow decodes and
resizes, numpy normalizes (torchvision's recipe), ONNX Runtime's Python
package runs the models. Run from the repository root with a venv holding
numpy, pillow and onnxruntime==1.31.1:

    .venv/bin/python crates/accel-runtime/tests/refs/gen_references.py

Outputs (next to this script):
- <photo>.torchvision.f32: float32 little-endian NCHW [1,3,224,224], torchvision preset
- sklearn_china.azureml-bgr.f32: float32 NHWC [1,224,224,3], the azureml-accel preset with BGR
- special/*.png|jpg + *.rgb: small generated images (grayscale, RGBA, EXIF-rotated
  JPEG) and the RGB bytes Pillow decodes from them (after exif_transpose)
- references.json: shapes, and ONNX Runtime logits of each model on each tensor
"""
import json
import pathlib

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[3]
FIX = ROOT / "fixtures"
PHOTOS = ["skimage_chelsea.png", "sklearn_china.jpg", "skimage_rocket.jpg"]
MODELS = ["shufflenet-v2-12-f32.onnx", "shufflenet-v2-12-qdq.onnx", "mobilenetv2-12-int8.onnx"]


def resize_crop(img, shorter=256, crop=224):
    """torchvision.transforms.Resize(256) + CenterCrop(224) on a PIL image."""
    w, h = img.size
    if w <= h:
        nw, nh = shorter, int(shorter * h / w)
    else:
        nw, nh = int(shorter * w / h), shorter
    img = img.resize((nw, nh), Image.BILINEAR)
    top = int(round((nh - crop) / 2.0))
    left = int(round((nw - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


def load_rgb(path):
    img = Image.open(path)
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


def torchvision_tensor(path):
    a = np.asarray(resize_crop(load_rgb(path)), dtype=np.float32) / 255.0
    a = (a - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return a.transpose(2, 0, 1)[None].astype(np.float32)


def azureml_tensor_bgr(path):
    """The seed's preprocess_array: 0..255 floats minus the RGB means, then BGR, NHWC."""
    a = np.asarray(resize_crop(load_rgb(path)), dtype=np.float32)
    a = a - np.array([123.68, 116.779, 103.939], np.float32)
    return a[..., ::-1][None].astype(np.float32)


def special_images():
    out = HERE / "special"
    out.mkdir(exist_ok=True)
    base = load_rgb(FIX / "images" / "skimage_chelsea.png").resize((64, 48), Image.BILINEAR)
    base.convert("L").save(out / "gray.png")
    rgba = base.convert("RGBA")
    alpha = Image.linear_gradient("L").resize((64, 48))
    rgba.putalpha(alpha)
    rgba.save(out / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    base.save(out / "exif6.jpg", quality=95, exif=exif)
    for name in ["gray.png", "rgba.png", "exif6.jpg"]:
        img = load_rgb(out / name)
        (out / (name + ".rgb")).write_bytes(np.asarray(img, np.uint8).tobytes())
        yield name, img.size


def main():
    refs = {"tensors": {}, "special": {}, "logits": {}}
    sessions = {m: ort.InferenceSession(str(FIX / "models" / m), providers=["CPUExecutionProvider"]) for m in MODELS}
    for photo in PHOTOS:
        t = torchvision_tensor(FIX / "images" / photo)
        name = f"{photo}.torchvision.f32"
        (HERE / name).write_bytes(t.astype("<f4").tobytes())
        refs["tensors"][name] = list(t.shape)
        for m, s in sessions.items():
            logits = s.run(None, {s.get_inputs()[0].name: t})[0][0]
            refs["logits"].setdefault(m, {})[photo] = [float(x) for x in logits]
    t = azureml_tensor_bgr(FIX / "images" / "sklearn_china.jpg")
    (HERE / "sklearn_china.azureml-bgr.f32").write_bytes(t.astype("<f4").tobytes())
    refs["tensors"]["sklearn_china.azureml-bgr.f32"] = list(t.shape)
    for name, (w, h) in special_images():
        refs["special"][name] = {"width": w, "height": h}
    refs["generator"] = {
        "numpy": np.__version__,
        "pillow": Image.__version__,
        "onnxruntime": ort.__version__,
    }
    (HERE / "references.json").write_text(json.dumps(refs, indent=1))


if __name__ == "__main__":
    main()
