"""The exported model: its card and the export with its parity check.

    card    `ModelCard`, what model.onnx carries besides its graph (torch-free, for prediction)
    bundle  `export_bundle`: dynamo export, one file, parity against onnxruntime
    session `OnnxModel`: an exported model on onnxruntime, images in, logits out (torch-free)

Its modules are imported by name; importing this package imports none of them.
"""

__all__ = ["bundle", "card", "session"]
