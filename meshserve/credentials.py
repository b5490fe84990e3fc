"""Bearer tokens, read at the process edge from a file or the environment — never from argv.

A command line is readable by every local user (``ps``, ``/proc/<pid>/cmdline``), so no
meshserve command takes a secret as a flag value: ``--admin-token-file PATH`` /
``--token-file PATH`` name a file (its content, stripped of surrounding white space, is the
token), else the environment variable (``$MESHSERVE_ADMIN_TOKEN``) holds it. A file that other
users can read is used but warned about. The old ``--admin-token`` / ``--token`` flags are
refused with a message saying what to use instead (`add_refused_secret_flag`).
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ADMIN_TOKEN_ENV", "add_refused_secret_flag", "read_token"]

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "MESHSERVE_ADMIN_TOKEN"


def read_token(
    file: str = "", env_var: str = ADMIN_TOKEN_ENV, env: Mapping[str, str] | None = None
) -> str:
    """The token in `file` when given, else ``env[env_var]`` ("" when neither is set).

    Raises OSError when `file` cannot be read and ValueError when it is empty.
    """
    if file:
        path = Path(file)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file %s is readable by other users (mode %o)", path, mode & 0o777)
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"token file {path} is empty")
        return token
    return (os.environ if env is None else env).get(env_var, "")


class _Refused(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        self.instead = kwargs.pop("instead")
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            f"{self.option_strings[0]} would show the token to every local user (process list); "
            f"use {self.instead}"
        )


def add_refused_secret_flag(
    parser: argparse.ArgumentParser, flag: str, file_flag: str, env_var: str = ADMIN_TOKEN_ENV
) -> None:
    """Make `flag` an error that points to `file_flag` or `$env_var` (for users of old flags)."""
    parser.add_argument(
        flag, action=_Refused, instead=f"{file_flag} PATH or ${env_var}", help=argparse.SUPPRESS
    )
