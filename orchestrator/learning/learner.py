"""Online softmax regression trained by SGD in numpy, and its export to ONNX.

Model: p = softmax((x * input_scale) @ W + b). Each labelled example takes one SGD step on the
cross-entropy loss with L2 decay: W -= lr * (x_s^T (p - onehot(y)) + l2 * W), b -= lr * (p - y).
`input_scale` keeps raw features (digits: 0..16) well conditioned; the export folds it into W so
the ONNX model takes the same raw inputs as the other digits models.

ONNX graph (onnx.helper, opset 13): MatMul(input, W') -> Add(b) -> Softmax(axis=1) gives
``probabilities`` [N, K] float32, ArgMax(axis=1, keepdims=0) gives ``label`` [N] int64.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError

__all__ = ["SoftmaxRegression", "export_onnx"]


@dataclass
class SoftmaxRegression:
    """Weights and counters of one online learner; `to_json`/`from_json` round-trip exactly."""

    weights: np.ndarray  # [features, classes] float64
    bias: np.ndarray  # [classes] float64
    lr: float = 0.05
    l2: float = 1e-4
    input_scale: float = 1.0
    updates: int = 0

    @classmethod
    def zeros(
        cls,
        n_features: int,
        n_classes: int,
        *,
        lr: float = 0.05,
        l2: float = 1e-4,
        input_scale: float = 1.0,
    ) -> SoftmaxRegression:
        return cls(np.zeros((n_features, n_classes)), np.zeros(n_classes), lr, l2, input_scale)

    @property
    def n_features(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.weights.shape[1])

    def check_features(self, x: np.ndarray, where: str = "") -> np.ndarray:
        """x as float64 [N, features]; InvalidInputError naming the expected width otherwise."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise InvalidInputError(
                f"{where}features have shape {list(x.shape)}; expected [N, {self.n_features}]"
            )
        return x

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = self.check_features(x) * self.input_scale @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        proba: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return proba

    def predict(self, x: np.ndarray) -> np.ndarray:
        labels: np.ndarray = np.argmax(self.predict_proba(x), axis=1)
        return labels

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(x) == np.asarray(y))) if len(y) else 0.0

    def update(self, x: np.ndarray, y: np.ndarray | int) -> SoftmaxRegression:
        """A new learner after one SGD step per row of (x, y); self is unchanged."""
        x = self.check_features(x)
        labels = np.atleast_1d(np.asarray(y, dtype=np.int64))
        if labels.shape[0] != x.shape[0]:
            raise InvalidInputError(f"{labels.shape[0]} labels for {x.shape[0]} feature rows")
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= self.n_classes:
            raise InvalidInputError(
                f"label {labels.tolist()} out of range; expected 0..{self.n_classes - 1}"
            )
        w, b = self.weights.copy(), self.bias.copy()
        for row, label in zip(x, labels, strict=True):
            xs = row * self.input_scale
            logits = xs @ w + b
            p = np.exp(logits - logits.max())
            p /= p.sum()
            p[label] -= 1.0
            w -= self.lr * (np.outer(xs, p) + self.l2 * w)
            b -= self.lr * p
        return SoftmaxRegression(
            w, b, self.lr, self.l2, self.input_scale, self.updates + int(labels.shape[0])
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.weights.shape),
            "weights": base64.b64encode(self.weights.astype("<f8").tobytes()).decode(),
            "bias": base64.b64encode(self.bias.astype("<f8").tobytes()).decode(),
            "lr": self.lr,
            "l2": self.l2,
            "input_scale": self.input_scale,
            "updates": self.updates,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SoftmaxRegression:
        rows, cols = (int(v) for v in data["shape"])
        weights = np.frombuffer(base64.b64decode(data["weights"]), dtype="<f8").reshape(rows, cols)
        bias = np.frombuffer(base64.b64decode(data["bias"]), dtype="<f8")
        return cls(
            weights.astype(np.float64),
            bias.astype(np.float64),
            float(data["lr"]),
            float(data["l2"]),
            float(data["input_scale"]),
            int(data["updates"]),
        )


def export_onnx(model: SoftmaxRegression, input_name: str = "input") -> bytes:
    """The serialized ONNX model computing `model.predict_proba` / `predict` (see docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (model.weights * model.input_scale).astype(np.float32)
    b = model.bias.astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [input_name, "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "online_softmax_regression",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, model.n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, [None, model.n_classes]
            ),
        ],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="meshserve.learning"
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())
