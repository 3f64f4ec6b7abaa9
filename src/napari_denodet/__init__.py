"""Joint denoising and particle detection (DENODET) for napari.

The importable core lives in :mod:`napari_denodet.core` and needs neither napari nor Qt.
This top-level module stays free of torch, Qt and napari imports so that npe2 can
discover the plugin cheaply.
"""

__version__ = "0.1.0"
