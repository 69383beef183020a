"""Shared fixtures: tiny architecture configs and a small synthetic MoNuSeg folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No test may reach the real Hub: in-process loads see a closed local endpoint (port 9,
# discard) before huggingface_hub is first imported, and fall back to the bundled copies.
# Tests that need a Hub start their own (tests/test_hub.py) and pass its address explicitly.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ.pop("HF_TOKEN", None)

import numpy as np
import pytest

_EXIT_STATUS = pytest.StashKey[int]()

# Tiny configs keep the suite fast. A newly registered architecture without an
# entry here is still tested, with its defaults.
TINY_KWARGS = {
    "unet": {"depth": 2, "base_filters": 4, "dropout": 0.0},
    "segnet": {"base_filters": 4, "convs_per_stage": [1, 1]},
    "deeplabv3": {"backbone_filters": [4, 8, 8, 8], "blocks_per_stage": [1, 1, 1, 1],
                  "aspp_filters": 8, "output_stride": 8, "dropout": 0.0},
}


def tiny_kwargs(name: str) -> dict:
    return dict(TINY_KWARGS.get(name, {}))


def synthetic_tile(rng: np.random.Generator, size: int = 96, n_nuclei: int = 6):
    """An H&E-like RGB tile with dark round nuclei and their polygons (x, y)."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = (235, 190, 215)  # eosin-pink background
    image = np.clip(image.astype(int) + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)
    polygons = []
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(n_nuclei):
        cx, cy = rng.uniform(10, size - 10, 2)
        r = rng.uniform(4, 8)
        angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        polygons.append(np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1))
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2] = (80, 50, 140)  # haematoxylin purple
    return image, polygons


def xml_text(polygons) -> str:
    regions = []
    for i, poly in enumerate(polygons, start=1):
        vertices = "".join(f'<Vertex X="{x:.3f}" Y="{y:.3f}" Z="0"/>' for x, y in poly)
        regions.append(f'<Region Id="{i}" Type="0"><Attributes/><Vertices>{vertices}</Vertices></Region>')
    return ('<Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>'
            + "".join(regions) + "</Regions></Annotation></Annotations>")


def write_monuseg_folder(root: Path, n: int = 4, size: int = 96, seed: int = 0, xml_for: int | None = None) -> Path:
    """images/*.tif + annotations/*.xml (first `xml_for` tiles) + masks/*.png, like ../shared/monuseg."""
    import tifffile
    from PIL import Image

    from segzoo.datasets.monuseg import rasterize_regions

    rng = np.random.default_rng(seed)
    for sub in ("images", "annotations", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    xml_for = n if xml_for is None else xml_for
    for i in range(n):
        stem = f"TILE-{i:02d}"
        image, polygons = synthetic_tile(rng, size)
        tifffile.imwrite(root / "images" / f"{stem}.tif", image)
        labels, _ = rasterize_regions(polygons, (size, size))
        Image.fromarray((labels > 0).astype(np.uint8)).save(root / "masks" / f"{stem}.png")
        if i < xml_for:
            (root / "annotations" / f"{stem}.xml").write_text(xml_text(polygons))
    return root


@pytest.fixture
def monuseg_folder(tmp_path) -> Path:
    return write_monuseg_folder(tmp_path / "monuseg")


@pytest.fixture(scope="session")
def real_monuseg() -> Path:
    """The real MoNuSeg folder from SEGZOO_MONUSEG, or skip with the reason."""
    value = os.environ.get("SEGZOO_MONUSEG")
    if not value:
        pytest.skip("SEGZOO_MONUSEG is not set (point it at ../shared/monuseg to run real-data tests)")
    path = Path(value)
    if not (path / "train").is_dir() or not (path / "test").is_dir():
        pytest.skip(f"SEGZOO_MONUSEG={value} has no train/ and test/ folders")
    return path


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """With napari's Qt/OpenGL and TensorFlow loaded in one test process, the interpreter's exit
    aborts in their native teardown ("free(): invalid pointer", exit 134) after every test has passed
    and been reported. The results are final here, so leave without that teardown, keeping pytest's
    exit status."""
    if "napari" in sys.modules and "tensorflow" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash.get(_EXIT_STATUS, 0))
