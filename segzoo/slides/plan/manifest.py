"""A slide job's work folder `<out>/<stem>.segzoo-chunks/` and its manifest, which decide
whether a re-run resumes.

`manifest.json` records the job's parameters: the model (config without provenance, runtime,
and model_fingerprint: its outputs at 64 points of a fixed input), the slide's identity
(level dimensions; path, size and mtime of a file, or the pixels' sha256 of an in-memory
image), the working grid, chunk size, halo, tissue and TTA settings. check_work accepts a
folder whose manifest equals the new job's (the fingerprints within 1e-3) and refuses one
from other parameters, naming the differences.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from segzoo.errors import UsageError
from segzoo.predict.predictor import Predictor
from segzoo.predict.tiling import predict_probabilities
from segzoo.slides.plan.grid import Grid
from segzoo.slides.readers.array import ArraySlide
from segzoo.slides.readers.base import Slide

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
TISSUE_METHOD = "segzoo.slides.tissue.tissue_mask"  # the method's id in manifests (its module has moved to
# segzoo.slides.plan.tissue; the id is kept so that work folders of earlier versions still resume)


def model_fingerprint(predictor: Predictor) -> list[float]:
    """The model's probabilities at 64 points of a fixed 64x64 pseudo-random input: two models
    (weights, precision or runtime) that disagree here are not the same model for resuming."""
    rng = np.random.default_rng(20260101)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    prob = predict_probabilities(predictor.run_batch, image, predictor.config)[4::8, 4::8, 0]
    return [round(float(v), 6) for v in prob.ravel()]


def fingerprints_differ(a: list[float], b: list[float], tolerance: float = 1e-3) -> bool:
    """Whether two model_fingerprint values come from different models (any point off by > tolerance)."""
    return len(a) != len(b) or max((abs(x - y) for x, y in zip(a, b)), default=0.0) > tolerance


def slide_identity(slide: Slide) -> dict:
    path = getattr(slide, "path", None)
    identity: dict = {"level_dimensions": [list(d) for d in slide.level_dimensions]}
    if isinstance(slide, ArraySlide) and path is None:
        identity["sha256"] = hashlib.sha256(np.ascontiguousarray(slide.image).tobytes()).hexdigest()
    elif path is not None:
        stat = Path(path).stat()
        identity.update(path=str(Path(path).resolve()), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return identity


def job_manifest(predictor: Predictor, slide: Slide, grid: Grid, chunk_size: int, halo: int, tissue: bool,
                 tta: bool) -> dict:
    """The manifest of a job (see the module docstring).

    predictor: the model (its config without provenance, runtime and model_fingerprint).
    slide: the open slide (slide_identity).
    grid: the working grid.
    chunk_size, halo: working pixels, after rounding to the stride.
    tissue: whether the tissue mask selects chunks.
    tta: whether chunks are predicted with test-time augmentation."""
    config = predictor.config.to_dict()
    config.pop("provenance", None)
    return {"format": "segzoo slide chunks", "version": MANIFEST_VERSION,
            "model": {"config": config, "runtime": getattr(predictor, "runtime", None),
                      "fingerprint": model_fingerprint(predictor)},
            "slide": slide_identity(slide), "grid": grid.to_dict(), "chunk_size": chunk_size, "halo": halo,
            "tissue": {"enabled": tissue, "method": TISSUE_METHOD}, "tta": tta}


def manifest_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ (the model fingerprint within 1e-3)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if name == "model.fingerprint" and isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            if fingerprints_differ(a, b):
                out.append("model weights (its outputs differ)")
        elif isinstance(a, dict) and isinstance(b, dict):
            out.extend(manifest_differences(a, b, f"{name}."))
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def check_work(work: Path, manifest: dict, restart: bool) -> bool:
    """True when `work` holds a job with the same manifest (a resume), False when it holds none
    or restart is set; UsageError (argument restart) when it holds another job (or something else)."""
    path = work / MANIFEST
    if restart or not work.exists():
        return False
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UsageError(f"{path}: unreadable ({err}); delete {work} or pass restart=True",
                             argument="restart") from None
        differences = manifest_differences(old, manifest)
        if differences:
            raise UsageError(f"{work} holds chunks of a job with other parameters ({'; '.join(differences[:5])}); "
                             "delete it or pass restart=True to start over", argument="restart")
        return True
    if any(work.iterdir()):
        raise UsageError(f"{work} exists without a {MANIFEST}; delete it or pass restart=True", argument="restart")
    return False
