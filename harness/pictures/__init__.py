"""Pictures drawn as pixels with Pillow and numpy, for a run and for an evaluation alike.

    raster     `Canvas`, fonts (with fallbacks for names DejaVu Sans lacks), the colour scale, PNG files
    text       `shorten`: long class names cut in the middle
    chart      `Chart` and `render`: line charts against epochs
    confusion  `draw_confusion`: the confusion matrix with its counts and colour bar

Nothing here imports torch, Lightning, torchmetrics or matplotlib (matplotlib's font
files are read, its modules only to list installed fonts for a name DejaVu cannot draw),
so the background writer's worker and an ONNX evaluation draw with it. Its modules are
imported by name.
"""

__all__ = ["chart", "confusion", "raster", "text"]
