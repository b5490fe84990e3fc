"""Recording rules and alerts as code: current, valid for promtool, and firing when they should
(``promtool test rules`` on tests/unit/promtool/rules_test.yml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILDER = ROOT / "deploy" / "prometheus" / "build_rules.py"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = Path(__file__).resolve().parent / "promtool" / "rules_test.yml"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`, deploy/bootstrap.sh)")
    return promtool


def test_rules_yaml_is_generated_and_current():
    proc = subprocess.run(
        [sys.executable, str(BUILDER), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_rules_pass_promtool_check():
    proc = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_fire_as_promtool_test_rules_expects():
    proc = subprocess.run(
        [_promtool(), "test", "rules", RULES_TEST.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULES_TEST.parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_operator_alert_is_defined():
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    tested = RULES_TEST.read_text()
    for name in alerts:
        assert f"alertname: {name}" in tested, f"{name} has no promtool test"
    assert len(alerts) >= 6
