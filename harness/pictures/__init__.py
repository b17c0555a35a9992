"""Pictures drawn as pixels with Pillow and numpy, for a run and for an evaluation alike.

    raster     `Canvas`, fonts (with fallbacks for names DejaVu Sans lacks), the colour scale, PNG files
    text       `shorten`: long class names cut in the middle
    chart      `Chart` and `render`: line charts against epochs
    confusion  `draw_confusion`: the confusion matrix with its counts and colour bar
    mosaic     `draw_mosaic`: a grid of captioned, framed images (samples, top losses, Grad-CAM)

Nothing here imports torch, Lightning or torchmetrics, so the background writer's worker
and an ONNX evaluation draw with it. matplotlib lends its DejaVu Sans font file, and its
font list (`matplotlib.font_manager`, imported then) only for a name DejaVu cannot draw.
Its modules are imported by name.
"""

__all__ = ["chart", "confusion", "mosaic", "raster", "text"]
