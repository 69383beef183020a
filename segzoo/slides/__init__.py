"""Whole-slide images: reading pyramidal slides at a model's resolution, and predicting
nuclei over a slide in chunks with flat memory, stitched so every nucleus is reported once.

Coordinates: every output is in level-0 pixel coordinates of the slide (x to the right,
y down, pixel centres at integer + 0.5 edges, i.e. pixel (r, c) covers [c, c+1) x [r, r+1)).
"""
