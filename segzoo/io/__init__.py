"""Files in and out: reading images (images), atomic and all-or-none writes (files), the
prediction output files (outputs), per-nucleus measurements (measurements) and outlines
(outlines). Imports no other segzoo package: every layer may use it."""
