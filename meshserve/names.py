"""The one grammar for names callers choose, and Consul KV keys that cannot leave their prefix.

A *name* (plan, model, step, branch, learner, logic function) is 1 to `NAME_MAX_CHARS`
characters of ASCII letters, digits, ``_``, ``.`` and ``-``, starting with a letter or a digit:
``digits-pipeline``, ``wide_mlp``, ``sql.lookup``. So a name is never empty, never ``.`` or
``..``, and never holds ``/``, white space or control characters: it is safe as one segment of a
KV key, a URL path, a Prometheus label value and a Consul service name.

A *KV prefix* (``--kv-prefix``) is one or more segments (letters, digits, ``_``, ``.``, ``-``;
never ``.`` or ``..``), each followed by ``/`` (``meshserve/``, ``team-a/ms/``). `kv_key` and
`kv_dir` are the only ways meshserve builds a key from parts: each part must be one safe
segment, so no input can address a key outside the prefix (``DeletePlan(name="../..")`` is
refused before any KV call).

Error messages quote at most `QUOTE_MAX_CHARS` characters of what was sent (`quote`).
"""

from __future__ import annotations

import re

from meshserve.errors import InvalidInputError

__all__ = [
    "NAME_MAX_CHARS",
    "QUOTE_MAX_CHARS",
    "check_name",
    "check_prefix",
    "kv_dir",
    "kv_key",
    "quote",
]

NAME_MAX_CHARS = 128
QUOTE_MAX_CHARS = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Key segments meshserve itself writes may start with '.' (the store marker ``.store``).
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")


def _is_segment(part: str) -> bool:
    return part not in (".", "..") and _SEGMENT.fullmatch(part) is not None


def quote(value: str, limit: int = QUOTE_MAX_CHARS) -> str:
    """`value` as a repr, cut to `limit` characters with the full length said when longer."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def check_name(kind: str, value: str) -> str:
    """`value` when it follows the name grammar, else InvalidInputError naming `kind`."""
    if len(value) <= NAME_MAX_CHARS and _NAME.fullmatch(value):
        return value
    if not value:
        raise InvalidInputError(f"{kind} name is required")
    raise InvalidInputError(
        f"{kind} name {quote(value)}: expected 1-{NAME_MAX_CHARS} characters of letters, digits, "
        "'_', '.' or '-', starting with a letter or digit"
    )


def check_prefix(prefix: str) -> str:
    """`prefix` when it is a valid KV namespace (see the module docstring)."""
    segments = prefix.split("/")
    if (
        len(prefix) <= 4 * NAME_MAX_CHARS
        and len(segments) > 1
        and segments[-1] == ""
        and all(_is_segment(s) for s in segments[:-1])
    ):
        return prefix
    raise InvalidInputError(
        f"KV prefix {quote(prefix)}: expected a path like 'meshserve/' or 'team-a/ms/': segments "
        "of letters, digits, '_', '.', '-' (never '.' or '..'), each followed by '/'"
    )


def kv_key(prefix: str, *parts: str) -> str:
    """``prefix + "/".join(parts)``, each part one safe segment (never '', '.', '..' or '/')."""
    if not parts:
        raise InvalidInputError("KV key: at least one part after the prefix is required")
    for part in parts:
        if not _is_segment(part):
            raise InvalidInputError(f"KV key part {quote(part)} is not a single safe segment")
    return prefix + "/".join(parts)


def kv_dir(prefix: str, *parts: str) -> str:
    """`kv_key` with a trailing '/': the folder to list or delete recursively."""
    return kv_key(prefix, *parts) + "/"
