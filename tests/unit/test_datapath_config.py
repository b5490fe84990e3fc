"""DataPathConfig: per-model overrides and precise validation messages."""

from __future__ import annotations

import pytest

from meshserve.orchestrator.datapath import BatchConfig, DataPathConfig, ModelPathConfig


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
