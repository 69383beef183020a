"""Sample data: the H&E tile that ships with segzoo (a 512x512 MoNuSeg 2018 crop, CC BY-NC-SA 4.0)."""

from __future__ import annotations

from segzoo.io.images import read_image, sample_image_path


def sample_tile() -> list[tuple]:
    """The bundled H&E sample tile as an RGB Image layer."""
    return [(read_image(sample_image_path()), {"name": "monuseg_sample", "rgb": True}, "image")]
