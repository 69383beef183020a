"""The napari plugin (``pip install "segzoo[napari]"``), declared to napari by its npe2 manifest
``napari.yaml`` (entry point group ``napari.manifest``), one role per module:

- ``widget``: the "segzoo: nuclei" dock widget (model, precision, runtime, TTA, tile size, image layer,
  field of view only; Run and Cancel), inference in a napari thread_worker;
- ``tiles``: the per-tile progress and cancel hook around a Predictor's runner, and the tile count;
- ``view``: what of an image layer to predict (its pixels, the part in view) and where the results go;
- ``layers``: a Prediction as napari layer data (Labels, probability Image, outline Shapes) and metadata;
- ``reader``: a segzoo/QuPath GeoJSON (or a ``_nuclei.csv``) as a Shapes layer;
- ``writer``: a Labels layer as segzoo's label TIFF + GeoJSON + CSV, with the writers the CLI uses;
- ``sample``: the bundled H&E sample tile;
- ``screenshot``: the README's screenshot (scripts/napari_screenshot.py).

Only this package imports napari, Qt (qtpy) or magicgui; nothing else in segzoo imports it.
"""
