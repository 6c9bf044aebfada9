"""broadcaster.backoff: the one retry-delay generator (no clock, randomness from outside)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest

from broadcaster.backoff import backoff


def first(n: int, delays: Iterator[float]) -> list[float]:
    return list(itertools.islice(delays, n))


def test_without_jitter_the_delays_grow_by_the_factor_up_to_the_maximum() -> None:
    assert first(6, backoff(initial=0.1, maximum=0.5)) == pytest.approx(
        [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    )
    assert first(4, backoff(initial=1.0, maximum=100.0, factor=3.0)) == [1.0, 3.0, 9.0, 27.0]


def test_a_factor_of_one_is_a_constant_delay_and_zero_is_allowed() -> None:
    assert first(3, backoff(initial=0.25, maximum=1.0, factor=1.0)) == [0.25] * 3
    assert first(3, backoff(initial=0.0, maximum=0.0)) == [0.0] * 3


def test_jitter_keeps_each_delay_between_half_and_all_of_its_nominal_value() -> None:
    nominal = first(12, backoff(initial=0.05, maximum=2.0))
    jittered = first(12, backoff(initial=0.05, maximum=2.0, jitter=random.Random(3)))
    assert all(d / 2 <= j <= d for d, j in zip(nominal, jittered, strict=True))
    assert jittered != nominal  # it does move


def test_the_same_seed_gives_the_same_delays_and_another_seed_others() -> None:
    def seeded(seed: int) -> list[float]:
        return first(8, backoff(initial=0.1, maximum=5.0, jitter=random.Random(seed)))

    assert seeded(7) == seeded(7)
    assert seeded(7) != seeded(8)


def test_the_generator_reads_no_global_randomness() -> None:
    random.seed(1)
    a = first(5, backoff(initial=0.1, maximum=5.0, jitter=random.Random(2)))
    random.seed(99)
    b = first(5, backoff(initial=0.1, maximum=5.0, jitter=random.Random(2)))
    assert a == b


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -0.1, "maximum": 1.0},
        {"initial": 2.0, "maximum": 1.0},
        {"initial": 0.1, "maximum": 1.0, "factor": 0.5},
    ],
)
def test_nonsense_arguments_are_refused_at_the_call(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        backoff(**kwargs)  # type: ignore[arg-type]
