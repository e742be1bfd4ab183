"""Look-alike crate names: the confusable skeleton and which existing name a new one resembles."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghostcrate.private.lookalikes import lookalike, skeleton

NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("tokio", "tok1o"),
        ("tokio", "TOKIO"),
        ("serde-json", "serde_json"),
        ("foo", "f0o"),
        ("log", "1og"),
        ("lib", "llb"),
        ("mio", "rnio"),
        ("wasm", "vvasrn"),
        ("Il1i", "llll"),
    ],
)
def test_look_alikes_share_a_skeleton(one: str, other: str) -> None:
    assert skeleton(one) == skeleton(other)


@pytest.mark.parametrize(("one", "other"), [("tokio", "tokyo"), ("mio", "nio"), ("ab", "a-b")])
def test_different_names_do_not(one: str, other: str) -> None:
    assert skeleton(one) != skeleton(other)


def test_lookalike_names_the_existing_crate_but_not_the_same_one() -> None:
    existing = ["serde", "tokio"]
    assert lookalike("tok1o", existing) == "tokio"
    assert lookalike("Tokio", existing) is None  # the same crate: handled as such
    assert lookalike("hyper", existing) is None


@given(NAMES)
def test_case_and_separators_never_change_the_skeleton(name: str) -> None:
    assert skeleton(name.upper().replace("-", "_")) == skeleton(name.lower().replace("_", "-"))
