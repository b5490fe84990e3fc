"""DataPathConfig: per-model overrides and precise validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.datapath import (
    BatchConfig,
    DataPathConfig,
    EjectionConfig,
    ModelPathConfig,
)
from meshserve.orchestrator.datapath.config import (
    datapath_config_from_mapping,
    load_datapath_config,
)


def test_per_model_overrides_fall_back_to_defaults() -> None:
    config = DataPathConfig(
        models={"wide": ModelPathConfig(batch=BatchConfig(max_batch_rows=8), transport="unary")}
    )
    assert config.batch_for("wide").max_batch_rows == 8
    assert config.transport_for("wide") == "unary"
    assert config.batch_for("other") == BatchConfig()
    assert config.transport_for("other") == "stream"
    assert not config.with_batching(False).batch_for("wide").enabled


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transport": "http"}, "transport='http' \\(expected 'stream' or 'unary'\\)"),
        ({"policy": "random"}, "policy='random'"),
        ({"default_timeout_s": 0}, "default_timeout_s=0 \\(expected > 0\\)"),
        ({"batch": BatchConfig(max_wait_us=-1)}, "batch.max_wait_us=-1"),
        (
            {"models": {"m": ModelPathConfig(batch=BatchConfig(max_batch_rows=0))}},
            "models\\['m'\\].batch.max_batch_rows=0",
        ),
    ],
)
def test_invalid_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DataPathConfig(**kwargs)


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "datapath.yaml"


def test_the_example_file_loads_with_its_per_model_override() -> None:
    config = load_datapath_config(EXAMPLE)
    assert config.batch_for("wide_mlp").max_batch_rows == 32
    assert config.batch_for("wide_mlp").linger  # per-model batch sections start from defaults
    assert config.batch_for("mlp") == config.batch
    assert config.timeout_for("wide_mlp") == 10.0
    assert config.retry.retry_codes == ("UNAVAILABLE", "RESOURCE_EXHAUSTED")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"batch": {"max_wait": 1}}, "unknown setting 'batch.max_wait' \\(expected one of"),
        ({"batch": {"max_wait_us": "2ms"}}, "batch.max_wait_us: expected int, got str"),
        ({"batch": {"linger": 1}}, "batch.linger: expected bool, got int"),
        ({"retry": {"retry_codes": "UNAVAILABLE"}}, "retry.retry_codes: expected tuple"),
        ({"models": {"m": {"batch": {"max_batch_rows": 0}}}}, "max_batch_rows=0"),
        ({"models": {"m": {"weight": 2}}}, "unknown setting 'models.m.weight'"),
        ({"models": ["m"]}, "models: expected a mapping"),
        ({"tls": {}}, "tls is set on the command line"),
        ({"default_timeout_s": 3}, "default_timeout_s is set on the command line"),
        ({"transport": "http"}, "transport='http'"),
    ],
)
def test_file_problems_name_the_key(values: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        datapath_config_from_mapping(values)


def test_floats_accept_ints_and_unreadable_files_name_the_path(tmp_path: Path) -> None:
    assert datapath_config_from_mapping({"ejection": {"base_ejection_s": 2}}).ejection == (
        EjectionConfig(base_ejection_s=2.0)
    )
    bad = tmp_path / "dp.yaml"
    bad.write_text("batch: [unclosed")
    with pytest.raises(InvalidInputError, match=f"datapath config {bad}"):
        load_datapath_config(bad)


def test_command_line_overrides_apply_on_top_of_the_file() -> None:
    from meshserve.orchestrator.server import OrchestratorConfig, _datapath

    base = DataPathConfig(
        transport="unary",
        models={"w": ModelPathConfig(batch=BatchConfig(max_batch_rows=4))},
    )
    kept = _datapath(OrchestratorConfig(datapath=base, default_timeout_s=7.0))
    assert kept.transport == "unary" and kept.batch_for("w").max_batch_rows == 4
    assert kept.default_timeout_s == 7.0
    flagged = _datapath(
        OrchestratorConfig(datapath=base, model_transport="stream", client_batching=False)
    )
    assert flagged.transport == "stream"
    assert not flagged.batch_for("w").enabled
