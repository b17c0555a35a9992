"""An exported model in onnxruntime, with the preprocessing its card stores (no torch).

`OnnxModel` opens a ``model.onnx`` written by the harness, reads its `ModelCard` and turns
image files into logits exactly as `harness.predict` and `harness.evaluate` need them:
RGB, resized to the stored square size (bilinear), scaled and normalised in numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from harness.core.errors import DataError
from harness.io.images import load_rgb, to_input
from harness.onnx.card import ModelCard

__all__ = ["OnnxModel"]


class OnnxModel:
    """A harness ONNX model on onnxruntime's CPU provider."""

    def __init__(self, model_path: Path) -> None:
        if not model_path.is_file():
            raise DataError(f"{model_path}: no such model file")
        try:
            self.session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        # onnxruntime's errors derive from Exception directly, one type per status code.
        except Exception as error:
            raise DataError(f"{model_path}: not a loadable ONNX model ({error})") from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.card = ModelCard.from_metadata(metadata, str(model_path))
        spec = self.card.preprocessing
        if (spec.channel_order, spec.layout) != ("RGB", "NCHW"):
            raise DataError(
                f"{model_path}: expects {spec.channel_order} {spec.layout} input; "
                "the harness prepares RGB NCHW only"
            )
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The logits of a prepared batch (N x 3 x H x W, as `harness.io.images.to_input` makes)."""
        output: npt.NDArray[np.float32] = self.session.run(None, {self.input_name: batch})[0]
        return output

    def logits(
        self, paths: Sequence[Path], batch_size: int = 32, *, flip: bool = False
    ) -> npt.NDArray[np.float32]:
        """The model's logits (N x C) for image files, in order; a `DataError` names an unreadable one.

        With `flip`, each image is mirrored left to right first (test-time flips).
        """
        chunks = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            batch = np.stack([to_input(load_rgb(path), self.card.preprocessing) for path in chunk])
            chunks.append(self.run(np.ascontiguousarray(batch[..., ::-1]) if flip else batch))
        classes = len(self.card.class_names)
        output: npt.NDArray[np.float32] = (
            np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, classes), np.float32)
        )
        return output
