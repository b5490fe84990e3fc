"""Build meshserve's example ONNX models offline, deterministically and idempotently.

Usage: ``python examples/build_models.py --out examples/models [--force]``

Everything comes from scikit-learn's bundled digits data set (no network):

- ``scaler.onnx``   StandardScaler: ``input`` float32 [-1,64] -> ``scaled`` float32 [-1,64]
- ``logreg.onnx``   LogisticRegression on scaled features
- ``mlp.onnx``      small MLPClassifier on scaled features
- ``forest.onnx``   small RandomForestClassifier on scaled features
  (each classifier: ``input`` float32 [-1,64] -> ``label`` int64 [-1], ``probabilities``
  float32 [-1,10])
- ``wide_mlp.onnx`` 64->4096->4096->10 relu/softmax MLP with fixed random weights built with
  onnx.helper (``input`` -> ``probabilities``, ~68 MB): heavy enough that batching matters. One
  row costs about as much as reading its 64 MB of weights (~4 ms on one core); 32 rows in one
  call cost ~11 ms, so merging rows is what sets a replica's throughput, not gRPC overhead
- ``digits_test.npz`` the held-out split: ``X`` raw float32 [n,64], ``y`` int64 [n]
- ``manifest.json`` file -> sha256 and input/output signatures

A second run is a no-op when every file exists and matches the manifest (and the recipe version).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RECIPE_VERSION", "build_all", "main"]

logger = logging.getLogger("build_models")

RECIPE_VERSION = 2  # 2: wide_mlp hidden layers 1024 -> 4096
SEED = 20240601
TARGET_OPSET = 17
# onnxruntime >= 1.18 reads IR version 9 (onnx 1.15); pin it so newer onnx stays compatible.
IR_VERSION = 9
N_FEATURES = 64
N_CLASSES = 10
WIDE_MLP_HIDDEN = 4096
MODEL_FILES = ("scaler.onnx", "logreg.onnx", "mlp.onnx", "forest.onnx", "wide_mlp.onnx")
DATA_FILE = "digits_test.npz"
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _signature(model: Any) -> dict[str, Any]:
    """Inputs/outputs of an onnx ModelProto as {name: {dtype, shape}} (dynamic dims -> -1)."""
    import onnx

    def one(values: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for value in values:
            tensor_type = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
            out[value.name] = {
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name,
                "shape": dims,
            }
        return out

    return {"inputs": one(model.graph.input), "outputs": one(model.graph.output)}


def _finish(model: Any) -> Any:
    """Pin IR version / opsets so the installed onnxruntime can load the model, then check it."""
    import onnx

    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _rename_outputs(model: Any, names: dict[str, str]) -> Any:
    """Rename graph outputs (and every node output feeding them)."""
    for node in model.graph.node:
        for i, out in enumerate(node.output):
            if out in names:
                node.output[i] = names[out]
    for value in model.graph.output:
        if value.name in names:
            value.name = names[value.name]
    return model


def _load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X.astype(np.float32), y.astype(np.int64), test_size=0.25, random_state=SEED, stratify=y
    )
    return X_train, X_test, y_train, y_test


def _convert(estimator: Any, name: str, classifier: bool) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": False}} if classifier else None
    model = convert_sklearn(
        estimator,
        name=name,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        target_opset={"": TARGET_OPSET, "ai.onnx.ml": 3},
        options=options,
    )
    outputs = [o.name for o in model.graph.output]
    if classifier:
        model = _rename_outputs(model, {outputs[0]: "label", outputs[1]: "probabilities"})
    else:
        model = _rename_outputs(model, {outputs[0]: "scaled"})
    return _finish(model)


def _build_wide_mlp(hidden: int = WIDE_MLP_HIDDEN) -> Any:
    """64 -> hidden -> hidden -> 10 with relu and softmax; He-initialised fixed weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)

    def dense(n_in: int, n_out: int, tag: str) -> list[Any]:
        w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.01).astype(np.float32)
        return [numpy_helper.from_array(w, f"{tag}_w"), numpy_helper.from_array(b, f"{tag}_b")]

    inits = dense(N_FEATURES, hidden, "fc1") + dense(hidden, hidden, "fc2")
    inits += dense(hidden, N_CLASSES, "fc3")
    nodes = [
        helper.make_node("Gemm", ["input", "fc1_w", "fc1_b"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "fc2_w", "fc2_b"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["a2"]),
        helper.make_node("Gemm", ["a2", "fc3_w", "fc3_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "wide_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", N_FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", N_CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        producer_name="meshserve-examples",
        opset_imports=[helper.make_opsetid("", TARGET_OPSET)],
    )
    return _finish(model)


def _manifest_ok(out: Path) -> bool:
    path = out / MANIFEST
    if not path.exists():
        return False
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("recipe_version") != RECIPE_VERSION:
        return False
    files = manifest.get("files", {})
    for name in (*MODEL_FILES, DATA_FILE):
        entry = files.get(name)
        if entry is None or not (out / name).exists() or _sha256(out / name) != entry["sha256"]:
            return False
    return True


def build_all(out: Path, force: bool = False) -> dict[str, Any]:
    """Build every example into `out` (skipped when the manifest matches); return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    if not force and _manifest_ok(out):
        logger.info("models in %s are up to date", out)
        return dict(json.loads((out / MANIFEST).read_text()))

    import onnx
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    started = time.monotonic()
    X_train, X_test, y_train, y_test = _load_digits()
    scaler = StandardScaler().fit(X_train)
    Xs_train = scaler.transform(X_train).astype(np.float32)
    Xs_test = scaler.transform(X_test).astype(np.float32)

    classifiers: dict[str, Any] = {
        "logreg": LogisticRegression(max_iter=500, random_state=SEED),
        "mlp": MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=SEED),
        "forest": RandomForestClassifier(n_estimators=20, max_depth=8, random_state=SEED, n_jobs=1),
    }
    models: dict[str, Any] = {"scaler": _convert(scaler, "scaler", classifier=False)}
    accuracy: dict[str, float] = {}
    for name, clf in classifiers.items():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLP convergence warning on a fixed budget
            clf.fit(Xs_train, y_train)
        accuracy[name] = float(clf.score(Xs_test, y_test))
        models[name] = _convert(clf, name, classifier=True)
    models["wide_mlp"] = _build_wide_mlp()

    files: dict[str, Any] = {}
    for name, model in models.items():
        path = out / f"{name}.onnx"
        tmp = path.with_suffix(".onnx.tmp")
        onnx.save(model, str(tmp))
        tmp.replace(path)
        files[path.name] = {"sha256": _sha256(path), **_signature(model)}
    data_path = out / DATA_FILE
    with (out / "digits_test.tmp.npz").open("wb") as fh:
        np.savez(fh, X=X_test.astype(np.float32), y=y_test.astype(np.int64))
    (out / "digits_test.tmp.npz").replace(data_path)
    files[DATA_FILE] = {
        "sha256": _sha256(data_path),
        "arrays": {
            "X": {"dtype": "float32", "shape": list(X_test.shape)},
            "y": {"dtype": "int64", "shape": list(y_test.shape)},
        },
    }
    manifest = {
        "recipe_version": RECIPE_VERSION,
        "seed": SEED,
        "opset": TARGET_OPSET,
        "accuracy": accuracy,
        "wide_mlp_layers": [N_FEATURES, WIDE_MLP_HIDDEN, WIDE_MLP_HIDDEN, N_CLASSES],
        "files": files,
    }
    _verify(out, X_test[:8])
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    logger.info(
        "built %d models in %s in %.1fs (accuracy %s)",
        len(models),
        out,
        time.monotonic() - started,
        accuracy,
    )
    return manifest


def _verify(out: Path, sample: np.ndarray) -> None:
    """Load every model in onnxruntime and run a small batch through it."""
    import onnxruntime as ort

    for name in MODEL_FILES:
        session = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        session.run(None, {"input": sample.astype(np.float32)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    build_all(args.out, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
