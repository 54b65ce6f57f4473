#!/usr/bin/env python3
"""Converts a TF.js graph model (model.json + its .bin shards) to ONNX with tf2onnx, checked by its outputs.

    convert_tfjs.py [--check-rows N] MODEL.json OUT.onnx        (run by scripts/convert_models.py)

tf2onnx needs TensorFlow, which is far too heavy for .smartpipe/venv: this script, started by any Python,
creates (once per machine) a separate venv in `${XDG_CACHE_HOME:-~/.cache}/smartpipe/convert-venv-tf` with
the pins below and re-runs itself there with `--inner`. convert_models.py only starts it when the converted
file is not cached yet, so a machine that has the ONNX never creates that venv.

Inside the venv:
1. the model JSON is fixed for TensorFlow 2.19's op registry: the TF.js converter dropped the type
   attributes that have defaults or are implied (`_FusedConv2D`'s `TArgs`, `TopKV2`'s `Tk` and
   `index_type`), and `import_graph_def` (which tf2onnx uses for shapes) refuses nodes without them;
2. tf2onnx 1.17.0 converts the fixed model (opset 17);
3. the ONNX graph is adapted to the manifest entry (JSON in `SMARTPIPE_MODEL_ENTRY`): an int32 input the
   manifest declares float32 gets a float32 input and a `Cast` (SmartPipe's agent feeds float32 tensors;
   0..255 integers are exact in float32), and only the outputs the manifest declares are kept;
4. the check: TensorFlow itself runs the same TF.js graph (fused ops split back into Conv2D /
   DepthwiseConv2dNative + BiasAdd + activation, weights de-quantized here, not by tf2onnx) on a test image
   (`SMARTPIPE_CHECK_IMAGE`, a PNG, else a seeded random image); back outside the TF venv, the ONNX file
   run by the caller's onnxruntime (.smartpipe/venv's 1.32.0) must agree within `SMARTPIPE_CHECK_ATOL`
   (default 1e-3, relative to the output's largest value when that is above 1) on every kept output;
   `--check-rows N` compares only the first N rows (axis 1) of each output: a detector's top-k tail of
   near-equal low scores comes out in another order from two runtimes (CenterNet's rows past the top ten,
   all scoring under 0.1 on the test image). A failure leaves no output file.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

TF_PINS = ["tf2onnx==1.17.0", "tensorflow-cpu==2.19.1", "numpy==1.26.4", "ml_dtypes==0.5.1"]


def fail(msg):
    print(f"convert_tfjs: error: {msg}", file=sys.stderr)
    sys.exit(1)


def outer(argv):
    rows = None
    if argv[:1] == ["--check-rows"] and len(argv) == 4 and argv[1].isdigit():
        rows, argv = int(argv[1]), argv[2:]
    if len(argv) != 2:
        fail("usage: convert_tfjs.py [--check-rows N] MODEL.json OUT.onnx")
    src, out = argv
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "smartpipe")
    venv = os.path.join(cache, "convert-venv-tf")
    pins = " ".join(TF_PINS)
    marker = os.path.join(venv, ".pins")
    if not (os.path.exists(marker) and open(marker).read() == pins):
        print(f"convert_tfjs: creating {venv} ({pins}; a one-time download of about 300 MB)", flush=True)
        shutil.rmtree(venv + ".part", ignore_errors=True)
        for cmd in ([sys.executable, "-m", "venv", venv + ".part"],
                    [os.path.join(venv + ".part", "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                     "--no-cache-dir", *TF_PINS]):
            if subprocess.run(cmd).returncode != 0:
                fail(f"`{' '.join(cmd)}` failed")
        with open(os.path.join(venv + ".part", ".pins"), "w") as f:
            f.write(pins)
        shutil.rmtree(venv, ignore_errors=True)
        os.replace(venv + ".part", venv)
    # A venv made under its `.part` name still runs: its scripts point there, so call python -m, not scripts.
    py = os.path.join(venv, "bin", "python")
    work = tempfile.mkdtemp(prefix="tfjs-")
    try:
        r = subprocess.run([py, os.path.abspath(__file__), "--inner", src, work])
        if r.returncode != 0:
            sys.exit(r.returncode)
        compare(work, rows)
        shutil.copyfile(os.path.join(work, "model.onnx"), out + ".part")
        os.replace(out + ".part", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fix_attrs(model):
    """Adds the type attributes TensorFlow 2.19 requires and the TF.js converter left out."""
    from google.protobuf.json_format import MessageToDict
    from tensorflow.python.framework import op_def_registry
    added = {}
    for n in model["modelTopology"]["node"]:
        a = n.setdefault("attr", {})
        if n["op"] == "_FusedConv2D" and "TArgs" not in a:
            a["TArgs"] = {"list": {"type": [a["T"]["type"]] * int(a["num_args"]["i"])}}
            added["_FusedConv2D.TArgs"] = added.get("_FusedConv2D.TArgs", 0) + 1
        od = op_def_registry.get(n["op"])
        if od is None:
            continue  # TF.js-only ops (FusedDepthwiseConv2dNative): tf2onnx maps them itself
        for ad in od.attr:
            if ad.name not in a and ad.type == "type" and ad.HasField("default_value"):
                a[ad.name] = MessageToDict(ad.default_value)
                key = f"{n['op']}.{ad.name}"
                added[key] = added.get(key, 0) + 1
    return added


def weights_of(model, folder):
    """name -> numpy array, de-quantized (float16 or uint8 with scale/min), from the model's shards."""
    import numpy as np
    wm = model["weightsManifest"]
    data = b"".join(open(os.path.join(folder, p), "rb").read() for g in wm for p in g["paths"])
    out, off = {}, 0
    for w in (w for g in wm for w in g["weights"]):
        count = int(np.prod(w["shape"], dtype=np.int64))
        q = w.get("quantization")
        dt = np.dtype(q["dtype"] if q else w["dtype"])
        arr = np.frombuffer(data, dtype=dt, count=count, offset=off)
        off += arr.nbytes
        if q and "scale" in q:
            arr = arr.astype(np.float32) * q["scale"] + q["min"]
        out[w["name"]] = arr.astype(w["dtype"]).reshape(w["shape"])
    if off != len(data):
        fail(f"the weights manifest covers {off} bytes, the shards hold {len(data)}")
    return out


def tf_graph_def(model, weights):
    """The TF.js graph as a TensorFlow GraphDef of registered ops, constants filled from `weights`."""
    import base64
    import tensorflow as tf
    from google.protobuf.json_format import ParseDict
    nodes = []
    for n in model["modelTopology"]["node"]:
        n = json.loads(json.dumps(n))
        n.pop("device", None)
        a = n.get("attr", {})
        if n["op"] in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            ops = [base64.b64decode(s).decode() for s in a["fused_ops"]["list"].get("s", [])]
            if ops[:1] != ["BiasAdd"] or len(ops) > 2 or int(a["num_args"]["i"]) != 1:
                fail(f"node {n['name']}: fused ops {ops} are not handled by the check")
            conv = "Conv2D" if n["op"] == "_FusedConv2D" else "DepthwiseConv2dNative"
            keep = {k: v for k, v in a.items() if k in ("T", "strides", "padding", "data_format", "dilations",
                                                         "explicit_paddings")}
            nodes.append({"name": n["name"] + "/c", "op": conv, "input": n["input"][:2], "attr": keep})
            last = n["name"] + "/c"
            bias = n["name"] if len(ops) == 1 else n["name"] + "/b"
            nodes.append({"name": bias, "op": "BiasAdd", "input": [last, n["input"][2]], "attr": {"T": a["T"]}})
            if len(ops) == 2:
                nodes.append({"name": n["name"], "op": ops[1], "input": [bias], "attr": {"T": a["T"]}})
            continue
        nodes.append(n)
    gd = tf.compat.v1.GraphDef()
    ParseDict({"node": nodes, "versions": model["modelTopology"].get("versions", {})}, gd)
    for node in gd.node:
        if node.op == "Const" and node.name in weights:
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name]))
    return gd


def check_input(model):
    import numpy as np
    import tensorflow as tf
    (spec,) = model["signature"]["inputs"].values()
    dims = [int(d["size"]) for d in spec["tensorShape"]["dim"]]
    h, w = (dims[1], dims[2]) if dims[1] > 0 else (256, 256)
    path = os.environ.get("SMARTPIPE_CHECK_IMAGE")
    if path and os.path.exists(path):
        img = tf.io.decode_png(tf.io.read_file(path), channels=3)[None].numpy().astype(np.float32)
        img = tf.image.resize(img, (h, w)).numpy()
        what = f"{os.path.basename(path)} resized to {w}x{h}"
    else:
        img = np.random.default_rng(7).uniform(0, 255, (1, h, w, 3)).astype(np.float32)
        what = f"a seeded random {w}x{h} image"
    return np.round(img).astype(np.float32), spec, what


def inner(src, work):
    """In the TF venv: fix, convert and adapt the model into WORK/model.onnx; TensorFlow's outputs on the
    check image into WORK/check.npz (`input` and one array per kept output)."""
    import numpy as np
    import onnx
    entry = json.loads(os.environ.get("SMARTPIPE_MODEL_ENTRY", "{}"))
    folder = os.path.dirname(os.path.abspath(src))
    model = json.load(open(src))
    added = fix_attrs(model)
    print(f"convert_tfjs: attributes added for TensorFlow 2.19: {added}", flush=True)
    tmp = os.path.join(work, "tfjs")
    os.makedirs(tmp)
    fixed = os.path.join(tmp, "model.json")
    for g in model["weightsManifest"]:
        for p in g["paths"]:
            os.symlink(os.path.join(folder, p), os.path.join(tmp, p))
    json.dump(model, open(fixed, "w"))
    raw = os.path.join(work, "raw.onnx")
    r = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tfjs", fixed, "--output", raw,
                        "--opset", "17"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"tf2onnx failed:\n{r.stderr[-4000:]}")
    m = onnx.load(raw)
    names = adapt(m, entry)
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(work, "model.onnx"))
    img, want, what = tf_run(model, folder, names)
    np.savez(os.path.join(work, "check.npz"), input=img, **{f"out{i}": a for i, a in enumerate(want)})
    with open(os.path.join(work, "check.json"), "w") as f:
        json.dump({"outputs": names, "what": what}, f)


def adapt(m, entry):
    """Float32 inputs where the manifest says so (with a Cast to the graph's int type), declared outputs only."""
    from onnx import TensorProto, helper
    declared_in = {i["name"]: i for i in entry.get("inputs", [])}
    for inp in list(m.graph.input):
        want = declared_in.get(inp.name)
        if want and want["dtype"] == "float32" and inp.type.tensor_type.elem_type == TensorProto.INT32:
            inner_name = inp.name + "__int32"
            for node in m.graph.node:
                node.input[:] = [inner_name if x == inp.name else x for x in node.input]
            m.graph.node.insert(0, helper.make_node("Cast", [inp.name], [inner_name], to=TensorProto.INT32,
                                                    name=inp.name + "/cast_to_int32"))
            inp.type.tensor_type.elem_type = TensorProto.FLOAT
            print(f"convert_tfjs: input `{inp.name}` takes float32 (cast to int32 inside)", flush=True)
    names = [o["name"] for o in entry.get("outputs", [])]
    if names:
        have = [o.name for o in m.graph.output]
        missing = [n for n in names if n not in have]
        if missing:
            fail(f"the manifest declares outputs {missing}; the converted graph has {have}")
        kept = [o for o in m.graph.output if o.name in names]
        del m.graph.output[:]
        m.graph.output.extend(kept)
    return [o.name for o in m.graph.output]


def tf_run(model, folder, names):
    """TensorFlow's own run of the TF.js graph on the check image: (input, [outputs], description)."""
    import numpy as np
    import tensorflow as tf
    img, spec, what = check_input(model)
    gd = tf_graph_def(model, weights_of(model, folder))
    outs = model["signature"]["outputs"]
    tensor = lambda n: n if ":" in n else n + ":0"  # noqa: E731
    g = tf.Graph()
    with g.as_default():
        tf.import_graph_def(gd, name="")
    x = img.astype(np.int32) if spec["dtype"] == "DT_INT32" else img
    with tf.compat.v1.Session(graph=g) as s:
        want = s.run([tensor(outs[n]["name"]) for n in names], {tensor(spec["name"]): x})
    return img, want, what


def compare(work, rows=None):
    """Outside the TF venv: the ONNX file run by onnxruntime against TensorFlow's outputs."""
    import numpy as np
    import onnxruntime as ort
    meta = json.load(open(os.path.join(work, "check.json")))
    arrays = np.load(os.path.join(work, "check.npz"))
    img = arrays["input"]
    sess = ort.InferenceSession(os.path.join(work, "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    got = sess.run(meta["outputs"], {inp.name: img if inp.type == "tensor(float)" else img.astype(np.int32)})
    atol = float(os.environ.get("SMARTPIPE_CHECK_ATOL", "1e-3"))
    for i, (n, b) in enumerate(zip(meta["outputs"], got)):
        a = arrays[f"out{i}"]
        if a.shape != b.shape:
            fail(f"output {n}: TensorFlow gives {a.shape}, the ONNX file {b.shape}")
        if rows is not None and a.ndim >= 2:
            a, b = a[:, :rows], b[:, :rows]
        diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        print(f"convert_tfjs: check on {meta['what']}: output {n} {list(a.shape)}: max |TF - ONNX| = "
              f"{diff:.3g} (values up to {scale:.3g})", flush=True)
        if not diff <= atol * max(1.0, scale):
            fail(f"output {n}: the ONNX file differs from TensorFlow's run of the TF.js graph by {diff} "
                 f"(allowed {atol} x max(1, {scale:.3g}))")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--inner":
        if len(sys.argv) != 4:
            fail("usage: convert_tfjs.py --inner MODEL.json WORKDIR")
        inner(sys.argv[2], sys.argv[3])
    else:
        outer(sys.argv[1:])
