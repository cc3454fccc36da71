"""The per-look tables of benches/adaptive_tables.py decide the stops that the stopping rule makes."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benches"))

import adaptive_tables as tables  # noqa: E402
import bench_adaptive as bench  # noqa: E402
from topk_certify import adaptive  # noqa: E402

EXAMPLES = 8  # the first 8 of the 100-class tuning mix: two of them are stopped by the predictive check
DEFAULT = (
    adaptive.PREDICTIVE_CHANCE,
    adaptive.PREDICTIVE_CHANCE,
    adaptive.PREDICTIVE_GROWTH,
    adaptive.PREDICTIVE_FROM,
    1,
)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("tables"))
    return tables.load_table("mix100", "tune", known=True, cache=cache, workers=1, examples=EXAMPLES), cache


@pytest.fixture(scope="module")
def loop():
    """The stopping rule itself (`adaptive.step`) and the clairvoyant ceiling on the same streams."""
    probs, labels = bench.load_case("mix100", "tune")
    case = bench.CASES["mix100"]
    return bench.rule_and_ceiling(probs[:EXAMPLES], labels[:EXAMPLES], case, bench.SPLITS["tune"]["noise"])


def test_the_table_stops_every_example_where_the_rule_does(table, loop):
    looks = tables.rule_looks(table[0], *DEFAULT)
    assert looks.tolist() == [run[0] for run in loop]
    radii = table[0]["best"][np.arange(EXAMPLES), looks]
    np.testing.assert_array_equal(radii, np.stack([run[3] for run in loop]))


def test_the_predictive_check_decides_some_of_these_stops(table):
    with_check = tables.rule_looks(table[0], *DEFAULT)
    without = tables.rule_looks(table[0], 0.0, 0.0, 0.0, adaptive.PREDICTIVE_FROM)
    assert np.all(with_check <= without) and np.count_nonzero(with_check < without) >= 2


def test_the_ceiling_matches_the_benchmark(table, loop):
    case = bench.CASES["mix100"]
    assert tables.ceiling_looks(table[0], case).tolist() == [run[1] for run in loop]
    np.testing.assert_array_equal(table[0]["fixed"], np.stack([run[2] for run in loop]))


def test_a_higher_level_never_stops_later_and_confirming_never_sooner(table):
    t = table[0]
    low = tables.rule_looks(t, 0.02, 0.02, 0.3, 1500)
    high = tables.rule_looks(t, 0.2, 0.2, 0.3, 1500)
    confirmed = tables.rule_looks(t, 0.2, 0.2, 0.3, 1500, confirm=2)
    assert np.all(high <= low) and np.all(confirmed >= high)
    assert np.any(high < low)


def test_known_probabilities_give_chances_where_the_check_runs(table):
    t = table[0]
    tabled = ~np.isnan(t["full"])
    assert tabled.any()
    np.testing.assert_array_equal(tabled, ~np.isnan(t["known"]))
    assert np.all((t["known"][tabled] >= 0) & (t["known"][tabled] <= 1))


def test_a_built_table_is_read_back_from_the_cache(table, monkeypatch):
    (stored,) = os.listdir(table[1])  # one finished file, no partial one left
    assert stored.endswith(f"_{tables.sources_digest()}.npz")
    monkeypatch.setattr(tables, "_example", None)  # building again would fail
    again = tables.load_table("mix100", "tune", known=True, cache=table[1], workers=1, examples=EXAMPLES)
    assert sorted(again) == sorted(table[0])
    for key in again:
        np.testing.assert_array_equal(again[key], table[0][key])
