"""Whole-slide images: reading pyramidal slides at a model's resolution, and predicting nuclei
over a slide in chunks with flat memory, stitched so every nucleus is reported once.

Subpackages by role, imported only downward (readers < plan < results < run):
readers (open a slide, read regions at a resolution), plan (working grid, chunks, tissue mask,
work folder), results (chunk results, output files, summaries) and run (the one orchestrator,
its local and Dask executors, the worker side). `options.SlideOptions` holds a run's settings.
The entry point is segzoo.predict_slides (segzoo.slides.run.orchestrator.predict_slides).

Coordinates: every output is in level-0 pixel coordinates of the slide (x to the right,
y down), with pixel centres at integers, as segzoo.io.outlines uses: pixel (row r, column c) is
the point (x=c, y=r) and covers [c - 0.5, c + 0.5] x [r - 0.5, r + 0.5].
"""
