"""Tokens come from a file or the environment; a token flag on the command line is refused."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from meshserve.credentials import add_refused_secret_flag, read_token


def test_a_file_wins_over_the_environment_and_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  s3cret\n")
    path.chmod(0o600)
    assert read_token(str(path), env={"MESHSERVE_ADMIN_TOKEN": "env"}) == "s3cret"
    assert read_token("", env={"MESHSERVE_ADMIN_TOKEN": "env"}) == "env"
    assert read_token("", env={}) == ""


def test_an_empty_or_missing_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(str(empty))
    with pytest.raises(OSError):
        read_token(str(tmp_path / "missing"))


def test_a_file_others_can_read_is_used_with_a_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "token"
    path.write_text("secret-value-123")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_token(str(path)) == "secret-value-123"
    assert "readable by other users" in caplog.text
    assert "secret-value-123" not in caplog.text


@pytest.mark.parametrize("argv", [["--token", "x"], ["--token=x"], ["--token"]])
def test_the_old_flag_is_refused_and_names_what_to_use(argv: list[str], capsys) -> None:
    parser = argparse.ArgumentParser(prog="meshserve plans")
    add_refused_secret_flag(parser, "--token", "--token-file")
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--token-file PATH or $MESHSERVE_ADMIN_TOKEN" in err
