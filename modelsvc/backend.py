"""The model backend: one onnxruntime InferenceSession and the signature read from it.

`ModelBackend` is the interface the core uses; `OnnxBackend` is the real implementation. The
backend is called from an executor thread only (never the event loop).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.modelsvc.config import SessionConfig

__all__ = ["ModelBackend", "OnnxBackend", "Signature", "TensorSpec", "file_sha256", "onnx_specs"]

log = logging.getLogger(__name__)

# onnxruntime's type strings -> numpy dtypes.
_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of a signature tensor; -1 marks a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.dtype.name}{list(self.shape)}"


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of a model, in the model's order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batched(self) -> bool:
        """True when every input and output has a dynamic first dimension (rows can be merged)."""
        specs = self.inputs + self.outputs
        return bool(specs) and all(s.shape and s.shape[0] == -1 for s in specs)

    def sha256(self) -> str:
        """sha256 over the canonical signature (names, dtypes, shapes)."""
        canon = {
            kind: [[s.name, s.dtype.name, list(s.shape)] for s in specs]
            for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs))
        }
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()


class ModelBackend(Protocol):
    """What the core needs from a model runtime."""

    signature: Signature
    model_sha256: str
    platform: str

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run the model on a batch; blocking (called in an executor thread)."""
        ...


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_specs(args: Sequence[object]) -> tuple[TensorSpec, ...]:
    """Specs of onnxruntime NodeArgs (session inputs/outputs); unsupported types are refused."""
    specs = []
    for arg in args:
        type_str = getattr(arg, "type", "")
        dtype = _ORT_TYPES.get(type_str)
        if dtype is None:
            raise InvalidInputError(
                f"model tensor '{getattr(arg, 'name', '?')}' has unsupported type {type_str} "
                f"(expected one of {sorted(_ORT_TYPES)})"
            )
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in getattr(arg, "shape", ()))
        specs.append(TensorSpec(getattr(arg, "name", ""), dtype, shape))
    return tuple(specs)


_OPT_LEVELS = ("disable", "basic", "extended", "all")


class OnnxBackend:
    """One onnxruntime InferenceSession (CPU), safe to call from several executor threads."""

    platform = "onnxruntime_onnx"

    def __init__(self, model_path: str | Path, config: SessionConfig) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise InvalidInputError(f"model file {str(path)!r} does not exist")
        self.model_sha256 = file_sha256(path)
        if config.expected_sha256 and config.expected_sha256.lower() != self.model_sha256:
            raise InvalidInputError(
                f"model file {str(path)!r} has sha256 {self.model_sha256}, "
                f"expected {config.expected_sha256.lower()}"
            )
        if config.graph_optimization not in _OPT_LEVELS:
            raise InvalidInputError(
                f"graph optimisation {config.graph_optimization!r} is not one of {_OPT_LEVELS}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = config.inter_op_threads
        if not config.allow_spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[config.graph_optimization]
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.signature = Signature(
            onnx_specs(self._session.get_inputs()), onnx_specs(self._session.get_outputs())
        )
        log.info(
            "loaded %s (sha256 %s): inputs %s outputs %s",
            path,
            self.model_sha256[:12],
            [f"{s.name}:{s.describe()}" for s in self.signature.inputs],
            [f"{s.name}:{s.describe()}" for s in self.signature.outputs],
        )

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        names = list(output_names)
        values = self._session.run(names, dict(inputs))
        return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}
