"""Data: image readers, annotations, data sets, splits, augmentation and generators.

Everything that turns files on disk into :class:`napari_gravity.types.Sample` records
(image, lesion points, radii, tissue mask, patient id) and back.
"""
