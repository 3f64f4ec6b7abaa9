"""The napari face: dock widgets that collect settings and run core functions in workers."""
