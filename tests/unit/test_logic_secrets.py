"""Secrets of logic steps are referenced (env var or file), never written in plan text."""

from __future__ import annotations

import pytest

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.logic.secrets import SecretRef, secret_ref


def test_literal_secret_is_refused_with_what_to_use():
    with pytest.raises(InvalidInputError, match=r"'dsn_env'.*'dsn_file'"):
        secret_ref({"dsn": "postgresql://u:pw@h/db"}, "dsn", "step 'user'")


def test_env_or_file_but_not_both(tmp_path, monkeypatch):
    assert secret_ref({}, "dsn", "s") is None
    with pytest.raises(InvalidInputError, match="not both"):
        secret_ref({"dsn_env": "A", "dsn_file": "/x"}, "dsn", "s")
    monkeypatch.setenv("MY_DSN", "postgresql://h/db")
    assert secret_ref({"dsn_env": "MY_DSN"}, "dsn", "s").read() == "postgresql://h/db"
    secret = tmp_path / "dsn"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    assert SecretRef(file=str(secret)).read() == "from-file"


def test_unset_or_unreadable_names_the_source_not_a_value(monkeypatch, tmp_path):
    monkeypatch.delenv("NOT_SET_DSN", raising=False)
    with pytest.raises(InvalidInputError, match=r"\$NOT_SET_DSN is not set"):
        SecretRef(env_var="NOT_SET_DSN").read()
    with pytest.raises(InvalidInputError, match="cannot read secret from file"):
        SecretRef(file=str(tmp_path / "missing")).read()
    assert "pw" not in repr(SecretRef(env_var="NOT_SET_DSN"))
