"""Secrets that logic steps need (a DSN, a Redis URL, an API token), never written in plan text.

A plan is stored in Consul KV and shown by Admin, so a step names *where* its secret is: param
``<what>_env`` (an environment variable of the orchestrator) or ``<what>_file`` (a secret file,
read with `meshserve.credentials.read_token`: content stripped, group/world-readable files warned
about). A literal ``<what>`` param is refused with a message saying what to use instead.
Messages name the source (``$VAR`` or the file path), never the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshserve.credentials import read_token
from meshserve.errors import InvalidInputError

__all__ = ["SecretRef", "secret_ref"]


@dataclass(frozen=True)
class SecretRef:
    """Where one secret lives: an environment variable or a file. `read()` returns the value."""

    env_var: str = ""
    file: str = ""

    def __post_init__(self) -> None:
        if bool(self.env_var) == bool(self.file):
            raise InvalidInputError("a secret reference names exactly one of an env var or a file")

    @property
    def source(self) -> str:
        """Printable origin of the secret (``$VAR`` or ``file PATH``), safe for messages."""
        return f"${self.env_var}" if self.env_var else f"file {self.file}"

    def read(self) -> str:
        """The secret; InvalidInputError naming the source when it is unset, unreadable or empty."""
        try:
            value = read_token(file=self.file, env_var=self.env_var)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read secret from {self.source}: {exc}") from None
        if not value:
            raise InvalidInputError(
                f"secret {self.source} is not set in the orchestrator's environment"
            )
        return value


def secret_ref(params: Mapping[str, Any], what: str, where: str) -> SecretRef | None:
    """The reference of secret `what` in step `params` (None when neither form is given)."""
    if what in params:
        raise InvalidInputError(
            f"{where}: param {what!r} would put a secret in the plan text (stored in Consul KV, "
            f"shown by Admin); name an environment variable with '{what}_env' or a secret file "
            f"with '{what}_file' instead"
        )
    env_var = str(params.get(f"{what}_env", ""))
    file = str(params.get(f"{what}_file", ""))
    if not env_var and not file:
        return None
    if env_var and file:
        raise InvalidInputError(f"{where}: give one of '{what}_env' or '{what}_file', not both")
    return SecretRef(env_var=env_var, file=file)
