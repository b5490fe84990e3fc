"""The name grammar and KV keys that cannot leave their prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshserve.errors import InvalidInputError
from meshserve.names import (
    NAME_MAX_CHARS,
    QUOTE_MAX_CHARS,
    check_name,
    check_prefix,
    kv_dir,
    kv_key,
    quote,
)


@pytest.mark.parametrize(
    "name", ["digits-pipeline", "wide_mlp", "sql.lookup", "a", "9x", "A.b-c_d"]
)
def test_names_of_the_grammar_pass(name: str) -> None:
    assert check_name("plan", name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../..", "a/b", "/a", " a", "a b", "-a", "_a", ".a", "a\x00", "ä", "a\n"],
)
def test_names_outside_the_grammar_are_refused_with_the_kind_named(name: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^plan name"):
        check_name("plan", name)


def test_long_names_are_refused_and_quoted_with_a_bounded_prefix() -> None:
    check_name("model", "m" * NAME_MAX_CHARS)
    huge = "x" * 65536
    with pytest.raises(InvalidInputError) as err:
        check_name("model", huge)
    assert len(err.value.message) < 400
    assert "65536 characters" in err.value.message


def test_quote_is_bounded() -> None:
    assert quote("abc") == "'abc'"
    assert quote("y" * 1000).startswith(repr("y" * QUOTE_MAX_CHARS))


@pytest.mark.parametrize("prefix", ["meshserve/", "team-a/ms/", "t1/"])
def test_valid_prefixes(prefix: str) -> None:
    assert check_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix", ["", "/", "meshserve", "/meshserve/", "a//", "../", "a/../", "a b/"]
)
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidInputError, match="KV prefix"):
        check_prefix(prefix)


def test_kv_keys_join_safe_segments_under_the_prefix() -> None:
    assert kv_key("ms/plans/", "p", "3") == "ms/plans/p/3"
    assert kv_key("ms/plans/", ".store") == "ms/plans/.store"
    assert kv_dir("ms/plans/", "p") == "ms/plans/p/"


@pytest.mark.parametrize("part", ["", ".", "..", "a/b", "../x", "a b", "a\x00"])
def test_kv_keys_refuse_parts_that_could_leave_the_prefix(part: str) -> None:
    with pytest.raises(InvalidInputError, match="single safe segment"):
        kv_key("ms/plans/", part)
    with pytest.raises(InvalidInputError):
        kv_dir("ms/plans/", "ok", part)


@given(st.lists(st.text(max_size=12), min_size=1, max_size=4))
def test_no_accepted_key_escapes_its_prefix(parts: list[str]) -> None:
    try:
        key = kv_key("ms/", *parts)
    except InvalidInputError:
        return
    segments = key.split("/")
    assert key.startswith("ms/")
    assert all(s not in ("", ".", "..") for s in segments)
