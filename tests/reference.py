"""The reference answers tests compare meshserve with: the example models run directly in
onnxruntime, outside any meshserve code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def onnx_outputs(models_dir: Path, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of example model `name` on `x`, straight from an onnxruntime session."""
    session = ort.InferenceSession(str(models_dir / f"{name}.onnx"))
    names = [o.name for o in session.get_outputs()]
    feed = {session.get_inputs()[0].name: x}
    return dict(zip(names, session.run(names, feed), strict=True))
