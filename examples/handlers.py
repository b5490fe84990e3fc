"""An example model handler: the digits models' own pre/post-processing, served with them.

Serve it with ``meshserve model serve examples/models/logreg.onnx --name digits
--handler examples.handlers:DigitsHandler`` (the repo root on PYTHONPATH).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DigitsHandler", "LabelHandler"]

Arrays = dict[str, np.ndarray]


class DigitsHandler:
    """Clips inputs to the digits intensity range and renormalises class probabilities.

    - Rejects NaN/inf inputs (``allow_non_finite = False``): the service answers
      INVALID_ARGUMENT naming the input before anything is queued.
    - ``preprocess`` clips every feature into [PIXEL_MIN, PIXEL_MAX] (row-wise, shape kept).
    - ``postprocess`` makes each ``probabilities`` row sum to exactly 1 in float32.
    """

    allow_non_finite = False
    PIXEL_MIN = 0.0
    PIXEL_MAX = 16.0

    def preprocess(self, inputs: Arrays) -> Arrays:
        return {
            name: np.clip(value, self.PIXEL_MIN, self.PIXEL_MAX).astype(value.dtype, copy=False)
            for name, value in inputs.items()
        }

    def postprocess(self, outputs: Arrays) -> Arrays:
        probs = outputs.get("probabilities")
        if probs is None:
            return outputs
        total = probs.sum(axis=-1, keepdims=True, dtype=np.float64)
        safe = np.where(total > 0, total, 1.0)
        return {**outputs, "probabilities": (probs / safe).astype(np.float32)}


class LabelHandler:
    """Adds a ``label`` output (the most probable class) to a model that only returns
    ``probabilities``: serve ``wide_mlp.onnx`` with ``--handler examples.handlers:LabelHandler``
    and its signature, metadata and typed contract gain ``label`` int64 [-1]."""

    extra_outputs = {"label": ("int64", [-1])}

    def postprocess(self, outputs: Arrays) -> Arrays:
        probs = outputs["probabilities"]
        return {**outputs, "label": np.argmax(probs, axis=-1).astype(np.int64)}
