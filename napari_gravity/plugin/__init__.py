"""napari plugin: reader / writer / sample data and the Detect, Review, Evaluate and
Retrain docks. The only part of napari-gravity that imports napari or Qt; it calls the
core through :mod:`napari_gravity.plugin._api` and starts the trainer as a subprocess.
"""
