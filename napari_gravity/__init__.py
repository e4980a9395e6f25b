"""napari-gravity: GravityNet small-lesion detection.

The Qt-free core lives in :mod:`napari_gravity.core` (gravity points, model, loss,
post-processing, prediction), :mod:`napari_gravity.data` and
:mod:`napari_gravity.evaluation`; the napari plugin layer lives in
:mod:`napari_gravity.plugin` and is the only part that imports napari or Qt.
"""

__version__ = "0.1.0"
