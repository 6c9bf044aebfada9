"""Header hash verification on real headers: mainnet frontier blocks and uncles, anvil Prague."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heads.header import (
    HeaderError,
    compute_header_hash,
    fast_header_hash,
    header_plan,
    verify_header_hash,
)
from heads.tracker import ChainTracker
from tests.conftest import MAINNET_FRONTIER

FRONTIER = MAINNET_FRONTIER
ANVIL_PRAGUE = Path(__file__).parent / "fixtures" / "anvil-prague-headers.json"


def load_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rb") as f:
        return [orjson.loads(line) for line in f]


@pytest.fixture(scope="module")
def mainnet_headers() -> list[dict[str, Any]]:
    return load_jsonl_gz(FRONTIER / "mainnet-0-8191-headers.jsonl.gz")


@pytest.fixture(scope="module")
def mainnet_uncles() -> list[dict[str, Any]]:
    return load_jsonl_gz(FRONTIER / "mainnet-0-8191-uncles.jsonl.gz")


@pytest.fixture(scope="module")
def prague_headers() -> list[dict[str, Any]]:
    headers: list[dict[str, Any]] = orjson.loads(ANVIL_PRAGUE.read_bytes())
    return headers


def test_every_mainnet_frontier_header_hashes_to_its_hash(
    mainnet_headers: list[dict[str, Any]],
) -> None:
    assert len(mainnet_headers) == 8192
    assert all(verify_header_hash(h, h["hash"]) is True for h in mainnet_headers)


def test_every_mainnet_uncle_hashes_to_its_hash(mainnet_uncles: list[dict[str, Any]]) -> None:
    assert len(mainnet_uncles) == 1410
    assert all(verify_header_hash(u, u["hash"]) is True for u in mainnet_uncles)


def test_anvil_prague_headers_verify(prague_headers: list[dict[str, Any]]) -> None:
    for h in prague_headers:
        assert "requestsHash" in h
        assert verify_header_hash(h, h["hash"]) is True


def _bump_hex(value: str) -> str:
    """The same field with its last hex digit changed (width kept)."""
    last = value[-1]
    return value[:-1] + ("1" if last != "1" else "2")


CONSENSUS_FIELDS = [
    "parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot", "receiptsRoot",
    "logsBloom", "difficulty", "number", "gasLimit", "gasUsed", "timestamp", "extraData",
    "mixHash", "nonce", "baseFeePerGas", "withdrawalsRoot", "blobGasUsed", "excessBlobGas",
    "parentBeaconBlockRoot", "requestsHash",
]  # fmt: skip


@pytest.mark.parametrize("field", CONSENSUS_FIELDS)
def test_a_prague_header_with_one_field_changed_is_rejected(
    prague_headers: list[dict[str, Any]], field: str
) -> None:
    genuine = prague_headers[0]
    tampered = dict(genuine)
    tampered[field] = _bump_hex(genuine[field]) if genuine[field] != "0x" else "0x01"
    assert verify_header_hash(tampered, genuine["hash"]) is False
    (event,) = ChainTracker().on_head("liar", tampered)
    assert event.reason == "hash_mismatch"  # type: ignore[union-attr]


@pytest.mark.parametrize("field", CONSENSUS_FIELDS[:15])
def test_a_frontier_header_with_one_field_changed_is_rejected(
    mainnet_headers: list[dict[str, Any]], field: str
) -> None:
    genuine = mainnet_headers[4242]
    tampered = dict(genuine, **{field: _bump_hex(genuine[field])})
    assert verify_header_hash(tampered, genuine["hash"]) is False


def test_bytes_shifted_between_fixed_width_fields_are_malformed_not_accepted(
    prague_headers: list[dict[str, Any]],
) -> None:
    genuine = prague_headers[0]
    shifted = dict(genuine)
    # Move a byte from the end of stateRoot to the front of transactionsRoot: a naive
    # concatenation of the hex would still hash the same.
    shifted["stateRoot"] = genuine["stateRoot"][:-2]
    shifted["transactionsRoot"] = "0x" + genuine["stateRoot"][-2:] + genuine["transactionsRoot"][2:]
    with pytest.raises(HeaderError):
        verify_header_hash(shifted, genuine["hash"])


def test_a_header_with_a_field_this_code_does_not_know_is_accepted_unverified(
    prague_headers: list[dict[str, Any]],
) -> None:
    future = dict(prague_headers[0], blockAccessListHash="0x" + "ab" * 32)
    assert verify_header_hash(future, future["hash"]) is None


def test_a_header_with_a_fork_group_only_partly_present_is_unverifiable(
    prague_headers: list[dict[str, Any]],
) -> None:
    partial = dict(prague_headers[0])
    del partial["excessBlobGas"]
    assert verify_header_hash(partial, partial["hash"]) is None


def test_a_bare_header_is_accepted_unverified() -> None:
    bare = {"number": "0x1", "hash": "0x" + "11" * 32, "parentHash": "0x" + "22" * 32}
    assert verify_header_hash(bare, bare["hash"]) is None


def test_quantities_with_leading_zeros_encode_as_their_minimal_integer(
    mainnet_headers: list[dict[str, Any]],
) -> None:
    genuine = mainnet_headers[100]
    padded = dict(genuine, gasLimit="0x000" + genuine["gasLimit"][2:])
    assert verify_header_hash(padded, genuine["hash"]) is True


# Text values of up to 80 characters for up to 17 keys: Hypothesis's "generation is slow" check
# tripped on a loaded 2-core machine (load 4+); the property has nothing to do with speed.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(CONSENSUS_FIELDS), st.text(max_size=80) | st.integers()))
def test_garbage_field_values_never_raise_anything_but_header_error(
    garbage: dict[str, Any],
) -> None:
    header = {
        "number": "0x1",
        "hash": "0x" + "11" * 32,
        "parentHash": "0x" + "22" * 32,
        **{k: "0x00" for k in CONSENSUS_FIELDS if k not in ("number", "parentHash")},
        **garbage,
    }
    try:
        verify_header_hash(header, header["hash"])
    except HeaderError:
        pass
    # And the tracker turns any of it into an event, never an exception.
    events = ChainTracker().on_head("fuzz", header)
    assert len(events) == 1


_FIELD_TEXT = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEFx -g", max_size=70).map(lambda t: "0x" + t),
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.none(),
)


@given(st.dictionaries(st.sampled_from(CONSENSUS_FIELDS), _FIELD_TEXT, max_size=6))
def test_the_generated_encoder_matches_the_obvious_loop_on_any_input(
    changes: dict[str, Any],
) -> None:
    genuine = orjson.loads(ANVIL_PRAGUE.read_bytes())[0]
    header = {**genuine, **changes}
    plan = header_plan(header)
    assert plan is not None
    try:
        expected: str | None = compute_header_hash(header, plan)
    except HeaderError:
        expected = None
    try:
        got: str | None = fast_header_hash(header, plan)
    except HeaderError:
        got = None
    assert got == expected


_PLAN_EXTRAS = st.lists(
    st.sampled_from(["hash", "size", "totalDifficulty", "uncles", "author", "futureField"]),
    unique=True,
    max_size=3,
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([14, 15, 16, 17, 18, 20, 21]),  # a fork's fields, or one short/over
            st.one_of(st.none(), st.integers(min_value=0, max_value=20)),  # one field dropped
            _PLAN_EXTRAS,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_header_plan_remembered_by_keys_is_the_plan_found_from_scratch(
    shapes: list[tuple[int, int | None, list[str]]],
) -> None:
    from heads.header import find_plan

    for count, drop, extras in shapes:
        keys = [k for i, k in enumerate(CONSENSUS_FIELDS[:count]) if i != drop] + extras
        header = dict.fromkeys(keys, "0x00")
        assert header_plan(header) == find_plan(header)
        assert header_plan(dict(reversed(header.items()))) == find_plan(header)
