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

DEFAULT = (
    adaptive.PREDICTIVE_CHANCE,
    adaptive.PREDICTIVE_CHANCE,
    adaptive.PREDICTIVE_GROWTH,
    adaptive.PREDICTIVE_FROM,
    1,
)
# (case, split, examples): in each, some stops are made by the predictive check and some of
# those by its 1,000-draw chance (the 250-draw one was near the level).
SETS = [("mix100", "tune5", 8), ("mix1000", "tune4", 6)]
SIZES = bench.adaptive_sizes()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Per set: (the tables, the benchmark's rule and ceiling on the same streams, the cache)."""
    out = {}
    for name, split, count in SETS:
        cache = str(tmp_path_factory.mktemp("tables"))
        table = tables.load_table(name, split, known=True, cache=cache, workers=1, examples=count)
        probs, labels = bench.load_case(name, split)
        loop = bench.rule_and_ceiling(probs[:count], labels[:count], bench.CASES[name], bench.SPLITS[split]["noise"])
        out[name] = (table, loop, cache)
    return out


@pytest.mark.parametrize("name", [s[0] for s in SETS])
def test_the_table_stops_every_example_where_the_rule_does(built, name):
    table, loop, _ = built[name]
    looks = tables.rule_looks(table, *DEFAULT)
    assert looks.tolist() == [run[0] for run in loop]
    radii = table["best"][np.arange(len(looks)), looks]
    np.testing.assert_array_equal(radii, np.stack([run[3] for run in loop]))


@pytest.mark.parametrize("name", [s[0] for s in SETS])
def test_the_predictive_check_and_its_second_draws_decide_some_stops(built, name):
    table = built[name][0]
    with_check = tables.rule_looks(table, *DEFAULT)
    without = tables.rule_looks(table, 0.0, 0.0, 0.0, adaptive.PREDICTIVE_FROM)
    assert np.all(with_check <= without) and np.any(with_check < without)
    screen_only = dict(table, full=table["screen"])
    assert np.any(tables.rule_looks(screen_only, *DEFAULT) != with_check)


@pytest.mark.parametrize("name", [s[0] for s in SETS])
def test_the_ceiling_matches_the_benchmark(built, name):
    table, loop, _ = built[name]
    assert tables.ceiling_looks(table, bench.CASES[name]).tolist() == [run[1] for run in loop]
    np.testing.assert_array_equal(table["fixed"], np.stack([run[2] for run in loop]))


def test_a_higher_level_never_stops_later(built):
    table = built["mix100"][0]
    low = tables.rule_looks(table, 0.02, 0.02, 0.3, 1500)
    high = tables.rule_looks(table, 0.2, 0.2, 0.3, 1500)
    assert np.all(high <= low) and np.any(high < low)


def toy_table(below, target=0.0):
    """One example, one k, open at every look, whose chance is 0.01 at the looks `below` and 0.5
    elsewhere (screen and full alike)."""
    shape = (1, SIZES.size, 1)
    chance = np.full(shape, 0.5)
    chance[0, list(below), 0] = 0.01
    return dict(
        done=np.zeros(shape, dtype=bool),
        projected=np.ones(shape, dtype=bool),
        target=np.full(shape, target),
        screen=chance,
        full=chance,
        known=np.full(shape, np.nan),
    )


def test_confirmation_waits_for_that_many_looks_in_a_row():
    first = int(np.searchsorted(SIZES, 1500))  # the first look the check may stop at
    table = toy_table([first, first + 2, first + 3, first + 4])
    stops = [int(tables.rule_looks(table, 0.05, 0.05, 0.0, 1500, confirm)[0]) for confirm in (1, 2, 3)]
    assert stops == [first, first + 3, first + 4]
    # The same chances for another target at the earlier look do not confirm.
    table["target"][0, first + 2, 0] = 0.5
    assert int(tables.rule_looks(table, 0.05, 0.05, 0.0, 1500, 2)[0]) == first + 4


def test_the_level_above_radius_0_applies_only_there():
    first = int(np.searchsorted(SIZES, 1500))
    at_zero, above = toy_table([first]), toy_table([first], target=0.5)
    assert int(tables.rule_looks(at_zero, 0.05, 0.001, 0.0, 1500)[0]) == first
    assert int(tables.rule_looks(above, 0.05, 0.001, 0.0, 1500)[0]) == SIZES.size - 1
    assert int(tables.rule_looks(above, 0.001, 0.05, 0.0, 1500)[0]) == first


def test_settings_the_table_cannot_decide_are_refused():
    table = toy_table([])
    with pytest.raises(ValueError, match="not tabled"):
        tables.rule_looks(table, 0.05, 0.05, 0.3, tables.EARLIEST - 1)
    with pytest.raises(ValueError, match="known=True"):
        tables.rule_looks(table, 0.05, 0.05, 0.3, 1500, chance="known")


def test_known_probabilities_give_chances_where_the_check_runs(built):
    table = built["mix100"][0]
    tabled = ~np.isnan(table["full"])
    assert tabled.any()
    np.testing.assert_array_equal(tabled, ~np.isnan(table["known"]))
    assert np.all((table["known"][tabled] >= 0) & (table["known"][tabled] <= 1))


def test_a_built_table_is_read_back_from_the_cache(built, monkeypatch):
    table, _, cache = built["mix100"]
    (stored,) = os.listdir(cache)  # one finished file, no partial one left
    assert stored.endswith(f"_{tables.sources_digest()}.npz")
    monkeypatch.setattr(tables, "_example", None)  # building again would fail
    again = tables.load_table("mix100", "tune5", known=True, cache=cache, workers=1, examples=SETS[0][2])
    assert sorted(again) == sorted(table)
    for key in again:
        np.testing.assert_array_equal(again[key], table[key])


@pytest.mark.parametrize("name", [s[0] for s in SETS])
def test_scores_are_the_benchmarks_share_and_accuracy_drop(built, name):
    table, loop, _ = built[name]
    case = bench.CASES[name]
    result = tables.evaluate({("s", name): table}, DEFAULT)[("s", name)]
    rule_rows = sum(int(SIZES[run[0]]) for run in loop)
    ceiling_rows = sum(int(SIZES[run[1]]) for run in loop)
    assert result["share"] == pytest.approx(ceiling_rows / rule_rows)
    assert result["saving"] == pytest.approx(bench.N * len(loop) / rule_rows)
    fixed = bench.certified_accuracy(np.stack([run[2] for run in loop]), case.radii)
    rule = bench.certified_accuracy(np.stack([run[3] for run in loop]), case.radii)
    assert result["drop"] == pytest.approx(max(0.0, (fixed - rule).max()) * len(loop))
    assert result["points"] == pytest.approx(100 * max(0.0, (fixed - rule).max()))
