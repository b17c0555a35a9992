"""harness: a training harness for image classifiers in which every piece of training
furniture is a subscriber to typed events.

The layout is the architecture; dependencies point down the list:

    harness.cli (`harness`), .run, .evaluate, .export, .predict, .report, .replay   command-line tools
    harness.training    the Lightning side: BusCallback, model, data, sampler, the run
    harness.evaluation  scoring a model on labelled images: metrics, pictures, the folder (torch-free)
    harness.onnx        the exported model: its card and session (torch-free), the export bundle
    harness.settings    the typed settings tree, its loader, plugin specs, the reference
    harness.pictures    drawing as pixels (Pillow): canvas, fonts, charts, the confusion matrix, grids
    harness.io          artifacts, the event record, the background writer, image files
    harness.core        bus, events, context, errors, options, spec, testing (no Lightning)

Subscribers live in the sibling package `subscribers`, which imports the core; no module
here imports it.
"""

__all__ = ["core", "evaluation", "io", "onnx", "pictures", "settings", "training"]
