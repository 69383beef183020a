"""Datasets: MoNuSeg reading/rasterisation (keras-free) and the training patch pipeline."""

from segzoo.data.monuseg import (
    Sample,
    discover_samples,
    load_sample,
    rasterize_regions,
    read_xml_regions,
)

__all__ = ["Sample", "discover_samples", "load_sample", "rasterize_regions", "read_xml_regions"]
