"""Speed and memory of the zoo's runtimes, end to end (read, tile, blend, threshold, instances).

Each measurement runs in its own process so peak RSS belongs to that runtime alone.
For a 1000x1000 tile: median and p95 latency over rounds x repeats runs (each process warms up
first), megapixels/s, peak RSS and throughput relative to Keras, and the network's forward pass
alone on the same padded tile (the part the runtime changes). For a large synthetic image (the
tile repeated): wall time, megapixels/s and peak RSS.

The roofline: each model's convolution work on the padded tile (GFLOP, counted from
model.onnx) and each runtime's network speed in GFLOP/s, beside this machine's float32
matrix-multiply speed (the faster of numpy's BLAS and onnxruntime's MatMul on a 4096x4096
product, all cores). A model's work divided by that speed is roughly the network time no fp32
runtime beats here. scripts/benchmark.py runs it and writes benchmark.json / benchmark.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from segzoo.provenance import environment, portable_command, portable_path

RUNTIMES = {"keras": ("keras", "model.weights.h5"), "onnx-fp32": ("onnx", "model.onnx"),
            "onnx-int8": ("onnx", "model.int8.onnx")}
"""Benchmark runtime name -> (segzoo runtime, the file it runs)."""


def measure(model: str, folder: Path, runtime_name: str, image: Path, *, repeats: int, warmup: int,
            large: int = 0) -> dict:
    """Measure one (model, runtime) in this process: for a tile, `warmup` predictions, then the
    times of `repeats` predictions end to end and of the network alone (ms); with `large`, one
    prediction of the tile repeated to large x large (wall s, MP/s). Peak RSS in MB."""
    import numpy as np

    import segzoo
    from segzoo.io.images import read_image
    from segzoo.predict.preprocessing import normalize, pad_to_multiple

    runtime, filename = RUNTIMES[runtime_name]
    if runtime == "onnx":
        predictor = segzoo.load(folder / filename)
    else:
        predictor = segzoo.load(folder, runtime="keras")
    result = {"model": model, "runtime": runtime_name}
    if large:
        tile = read_image(image)
        reps = -(-large // min(tile.shape[:2]))
        image_array = np.tile(tile, (reps, reps, 1))[:large, :large]
        del tile
        start = time.perf_counter()
        out = predictor.predict(image_array)
        wall = time.perf_counter() - start
        result.update(size=large, wall_s=wall, mp_per_s=large * large / 1e6 / wall, nuclei=out.num_nuclei)
    else:
        rgb = read_image(image)
        shape = rgb.shape
        for _ in range(warmup):
            predictor.predict(image)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = predictor.predict(image)
            times.append(time.perf_counter() - start)
        # The network alone on the same (normalised, stride-padded) tile: what the runtime changes.
        prep = predictor.config.preprocessing
        batch = pad_to_multiple(normalize(rgb, prep), prep.pad_to_stride, prep.pad_mode)[0][None]
        forward = []
        for _ in range(repeats):
            start = time.perf_counter()
            predictor.run_batch(batch)
            forward.append(time.perf_counter() - start)
        result.update(size=f"{shape[1]}x{shape[0]}", pixels=shape[0] * shape[1], padded=list(batch.shape[1:3]),
                      times_ms=[1000 * t for t in times], forward_times_ms=[1000 * t for t in forward],
                      nuclei=out.num_nuclei, **postprocessing_times(predictor, rgb, repeats))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def postprocessing_times(predictor, rgb, repeats: int) -> dict:
    """Instance post-processing alone on one tile's network outputs, side by side (ms, lists of
    `repeats`): `post_times_ms` with the model's own config, `transform_times_ms` with the
    distance-transform watershed every model used before the learned instance maps (the same
    for a model without maps). Threshold, hole filling and small-object removal are in both."""
    from segzoo.predict.postprocessing import outputs_to_instances
    from segzoo.predict.tiling import predict_probabilities

    config = predictor.config
    transform = dataclasses.replace(config, postprocessing=dataclasses.replace(config.postprocessing,
                                                                               instance_map=None))
    outputs = predict_probabilities(predictor.run_batch, rgb, config)
    own, old = [], []
    for _ in range(repeats):
        own.append(1000 * _timed(lambda: outputs_to_instances(outputs, config)))
        old.append(1000 * _timed(lambda: outputs_to_instances(outputs, transform)))
    return {"post_times_ms": own, "transform_times_ms": old,
            "instance_map": config.postprocessing.instance_map}


def _child(job: str) -> None:
    """The measuring process (run_child): measure the JSON `job` and print "RESULT <json>"."""
    spec = json.loads(job)
    spec["folder"], spec["image"] = Path(spec["folder"]), Path(spec["image"])
    print("RESULT " + json.dumps(measure(**spec)), flush=True)



def convolution_gflop(onnx_path: Path, height: int, width: int) -> float:
    """Multiply-adds x 2 of every Conv and ConvTranspose for one (1, height, width, 3) input,
    from ONNX shape inference on a copy of the graph with that input shape fixed."""
    import numpy as np
    import onnx

    model = onnx.load(str(onnx_path))
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, height, width, 3)):
        dim.ClearField("dim_param")
        dim.dim_value = value
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        # Conv: each output element sums (C_in/group x kh x kw) products; ConvTranspose: each
        # input element is spread over (C_out/group x kh x kw) outputs.
        counted = node.output[0] if node.op_type == "Conv" else node.input[0]
        shape = shapes.get(counted)
        if not shape or 0 in shape:
            raise ValueError(f"{onnx_path}: no static shape for {node.op_type} {node.name!r}")
        total += 2 * int(np.prod(shape)) * int(np.prod(weights[node.input[1]][1:]))
    return total / 1e9


def sgemm_gflops(size: int = 4096, repeats: int = 5) -> dict[str, float]:
    """This machine's float32 matrix-multiply speed (all cores, best of `repeats`) by library:
    numpy's BLAS and onnxruntime's MatMul (MLAS). They differ by CPU: OpenBLAS may pick an older
    kernel for a new core that MLAS drives with AVX-512, so the roofline takes the faster."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION, 9)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    runs = {"numpy": lambda: a @ b, "onnxruntime": lambda: session.run(None, {"a": a, "b": b})}
    speeds = {}
    for library, run in runs.items():
        run()
        speeds[library] = 2 * size ** 3 / min(_timed(run) for _ in range(repeats)) / 1e9
    return speeds


def cpu_name() -> str:
    """The CPU model and whether it has AVX-512: results from different machines differ by up to 2x,
    so the table names the one it was measured on."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name", platform.machine())
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name + (", AVX-512" if "avx512f" in fields.get("flags", "").split() else "")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summarize(measurements: list[dict]) -> dict:
    """One row from the rounds of one (model, runtime): median and p95 over every repeat of
    every round, the largest peak RSS."""
    row = {k: v for k, v in measurements[0].items()
           if k not in ("times_ms", "forward_times_ms", "post_times_ms", "transform_times_ms", "peak_rss_mb")}
    for key in ("post", "transform"):
        values = [t for m in measurements for t in m.get(f"{key}_times_ms", [])]
        if values:
            row[f"{key}_ms"] = statistics.median(values)
    times = sorted(t for m in measurements for t in m["times_ms"])
    forward = [t for m in measurements for t in m["forward_times_ms"]]
    median = statistics.median(times)
    row.update(median_ms=median, p95_ms=times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))],
               mp_per_s=row.pop("pixels") / 1e3 / median, forward_ms=statistics.median(forward),
               repeats=len(times), rounds=len(measurements),
               peak_rss_mb=max(m["peak_rss_mb"] for m in measurements))
    return row


def run_child(model: str, folder: Path, runtime: str, image: Path, *, repeats: int, warmup: int,
              large: int = 0) -> dict | None:
    """measure() in a fresh Python process (its peak RSS is that runtime's alone); None (and a
    warning with the process's stderr) when it fails."""
    job = json.dumps({"model": model, "folder": str(folder), "runtime_name": runtime, "image": str(image),
                      "repeats": repeats, "warmup": warmup, "large": large})
    code = "import sys; from segzoo.evaluation.benchmark import _child; _child(sys.argv[1])"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code, job], capture_output=True, text=True, env=env, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"warning: {model}/{runtime} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None


def _software(meta: dict) -> str:
    """" Software: <packages>; git commit <hash>." from meta["environment"] ("" before it was recorded)."""
    env = meta.get("environment")
    if not env:
        return ""
    packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v)
    commit = env.get("git_commit")
    where = (f"git commit {commit[:12]}{' with uncommitted changes' if env.get('git_dirty') else ''}"
             if commit else "not a git checkout")
    return f" Software: {packages} (Keras backend {env.get('keras_backend')}); {where}."


def markdown(rows: list[dict], large_rows: list[dict], meta: dict) -> str:
    lines = [f"Benchmark: {meta['cpu_count']} CPU cores, {meta['machine']}, Python {meta['python']}; "
             f"end to end per image (read, tiles, blend, threshold, instances); "
             f"{meta.get('rounds', 1)} rounds (a fresh process per model, runtime and round, runtimes "
             f"interleaved) of {meta['repeats']} repeats after {meta['warmup']} warm-up.{_software(meta)}", "",
             "| model | runtime | tile | median ms | p95 ms | MP/s | peak RSS MB | speed vs Keras "
             "| network alone ms | network speed vs Keras | network GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    keras = {r["model"]: r for r in rows if r["runtime"] == "keras"}

    def ratio(r: dict, key: str) -> str:
        base = keras.get(r["model"], {}).get(key)
        return f"{base / r[key]:.2f}x" if base and r.get(key) else "-"

    for r in rows:
        forward = f"{r['forward_ms']:.0f}" if r.get("forward_ms") else "-"
        gflop = meta.get("gflop", {}).get(r["model"])
        speed = f"{gflop / r['forward_ms'] * 1000:.0f}" if gflop and r.get("forward_ms") else "-"
        lines.append(f"| {r['model']} | {r['runtime']} | {r['size']} | {r['median_ms']:.0f} | {r['p95_ms']:.0f} | "
                     f"{r['mp_per_s']:.2f} | {r['peak_rss_mb']:.0f} | {ratio(r, 'median_ms')} | {forward} | "
                     f"{ratio(r, 'forward_ms')} | {speed} |")
    speeds = meta.get("sgemm_gflops_by_library") or {}
    if meta.get("gflop") and speeds:
        peak = max(speeds.values())
        by_library = ", ".join(f"{k} {v:.0f}" for k, v in speeds.items())
        lines += ["", f"Roofline: this machine multiplies float32 matrices at {peak:.0f} GFLOP/s (4096x4096, all "
                  f"cores, the faster of {by_library}). A network's convolution work at that "
                  "speed is roughly the time no fp32 runtime beats here: direct convolutions are matrix "
                  "multiplies, so a share near or over 100% means the runtime has little left to gain.", "",
                  "| model | padded tile | convolution GFLOP | network at the matmul speed ms | onnx-fp32 network speed / matmul speed |",
                  "|---|---|---|---|---|"]
        fp32 = {r["model"]: r for r in rows if r["runtime"] == "onnx-fp32"}
        for model, gflop in meta["gflop"].items():
            floor = gflop / peak * 1000
            row = fp32.get(model, {})
            share = f"{floor / row['forward_ms']:.0%}" if row.get("forward_ms") else "-"
            padded = "x".join(str(v) for v in reversed(row.get("padded", []))) or "-"
            lines.append(f"| {model} | {padded} | {gflop:.1f} | {floor:.0f} | {share} |")
    post_rows = [r for r in rows if r.get("post_ms") and r.get("forward_ms")]
    if post_rows:
        lines += ["", "Instance post-processing per tile, alone and side by side on the same network outputs: "
                  "the model's own (a learned instance map where the model has one) and the "
                  "distance-transform watershed every model used before.", "",
                  "| model | runtime | network alone ms | instances ms | map | distance-transform watershed ms "
                  "| instances / watershed |", "|---|---|---|---|---|---|---|"]
        for r in post_rows:
            lines.append(f"| {r['model']} | {r['runtime']} | {r['forward_ms']:.0f} | {r['post_ms']:.0f} | "
                         f"{r.get('instance_map') or '-'} | {r['transform_ms']:.0f} | "
                         f"{r['post_ms'] / r['transform_ms']:.2f} |")
    if large_rows:
        lines += ["", "| model | runtime | image | wall s | MP/s | peak RSS MB |", "|---|---|---|---|---|---|"]
        for r in large_rows:
            lines.append(f"| {r['model']} | {r['runtime']} | {r['size']}x{r['size']} | {r['wall_s']:.1f} | "
                         f"{r['mp_per_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def run_meta(image: Path, argv: list[str], *, repeats: int, rounds: int, warmup: int) -> dict:
    """The machine and settings of a benchmark run, with paths relative to the working folder
    (the shipped benchmark.json names no machine), the command (`python scripts/benchmark.py
    <argv>`) and the software (segzoo.provenance.environment: package versions, git commit)."""
    return {"cpu_count": os.cpu_count(), "machine": cpu_name(), "python": platform.python_version(),
            "image": portable_path(image), "repeats": repeats, "rounds": rounds, "warmup": warmup,
            "gflop": {}, "command": portable_command("python scripts/benchmark.py", argv),
            "environment": environment()}


def run_benchmark(folders: dict[str, Path], image: Path, argv: list[str], *, runtimes: list[str] | None = None,
                  repeats: int = 5, rounds: int = 3, warmup: int = 1, large: int = 10000,
                  large_runtime: str = "onnx-fp32", large_models: list[str] | None = None) -> dict:
    """Benchmark each model ({name: zoo folder}) on each runtime that has its file: `rounds`
    processes per (model, runtime), interleaved across runtimes, pooled by summarize(); the
    large image on `large_models` (default: the first model); then the roofline (the machine's
    matmul speed, each model's convolution GFLOP). Returns {"meta", "tile", "large"}
    (benchmark.json); markdown() renders it."""
    runtimes = list(runtimes or RUNTIMES)
    rows, large_rows = [], []
    large_models = set(large_models or list(folders)[:1])
    for model, folder in folders.items():
        present = [r for r in runtimes if (folder / RUNTIMES[r][1]).is_file()]
        for runtime in sorted(set(runtimes) - set(present)):
            print(f"skip {model}/{runtime}: no {RUNTIMES[runtime][1]}", file=sys.stderr)
        measured: dict[str, list[dict]] = {r: [] for r in present}
        for _ in range(rounds):
            for runtime in present:
                result = run_child(model, folder, runtime, image, repeats=repeats, warmup=warmup)
                if result:
                    measured[runtime].append(result)
        for runtime in present:
            if measured[runtime]:
                rows.append(summarize(measured[runtime]))
                print(json.dumps(rows[-1]), flush=True)
        if large and model in large_models and (folder / RUNTIMES[large_runtime][1]).is_file():
            row = run_child(model, folder, large_runtime, image, repeats=1, warmup=0, large=large)
            if row:
                large_rows.append(row)
                print(json.dumps(row), flush=True)
    meta = run_meta(image, argv, repeats=repeats, rounds=rounds, warmup=warmup)
    meta["sgemm_gflops_by_library"] = sgemm_gflops()
    for row in rows:
        if row["runtime"] == "onnx-fp32" and row.get("padded"):
            meta["gflop"][row["model"]] = convolution_gflop(folders[row["model"]] / "model.onnx", *row["padded"])
    return {"meta": meta, "tile": rows, "large": large_rows}
