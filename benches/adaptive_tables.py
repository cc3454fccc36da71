"""Per-look tables of the adaptive stopping rule's inputs, and levels tried on them in seconds.

For every example of a case and split of `bench_adaptive.py` (simulated samples, the same
noise streams), at every look of the schedule: the radii certified so far, the next
requested radius per k, whether the optimistic projection leaves it open, and the predictive
check's chance that the full budget certifies it (as the rule computes it: 250 draws, and
1,000 where the level is near). With --known, also the chance a check would give if it knew
the example's probabilities (the remaining samples drawn from them): how much of the gap to
the ceiling is the posterior's not knowing them.

The stopping rule only reads these, so a predictive level (one at radius 0, another above
it, growing as (samples / start)^growth from `start` samples, optionally confirmed at two
consecutive looks) decides every stop from the table without sampling again, and every
tuning split can be checked at once. With the package's settings the stops are those of
`adaptive.step` (tests/test_adaptive_tables.py checks it).

Tables are kept in --cache, under a name that changes with the stopping rule's sources.

Usage: python benches/adaptive_tables.py [--split tune tune3 tune4 tune5] [--case ...] [--known] [--calibration]
           [--level 0.05 ...] [--above ...] [--growth 0.3 ...] [--start 1500 ...] [--confirm 1 2]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Optional, Sequence

import numpy as np

import bench_adaptive as bench

EARLIEST = 400  # the first look whose chance is tabled (the rule uses it from 1,500)
KNOWN_DRAWS = 1000
TUNING_SPLITS = ("tune", "tune3", "tune4", "tune5")


def example_table(name: str, split: str, e: int, p: np.ndarray, label: int, known: bool) -> Dict[str, np.ndarray]:
    """Example e's looks (probabilities p, true label): (S, K) arrays of what the rule reads at
    each look, and its fixed radius."""
    from topk_certify import adaptive
    from topk_certify.stats import certify_counts

    case = bench.CASES[name]
    ks = list(case.ks)
    schedule = adaptive.make_schedule(bench.N, bench.ALPHA)
    radii = adaptive.resolve_radii(
        case.radii, n=bench.N, num_classes=p.size, ks=ks, sigma=case.sigma, alpha=bench.ALPHA, bound="simuem"
    )
    stream = bench.sample_stream(p, bench.SPLITS[split]["noise"], e)
    shape = (len(schedule.sizes), len(ks))
    out = {key: np.zeros(shape, dtype=bool) for key in ("done", "projected")}
    out.update({key: np.zeros(shape) for key in ("best", "target")})
    out.update({key: np.full(shape, np.nan) for key in ("screen", "full", "known")})
    n, alpha_final, settings = bench.N, schedule.alphas[-1], adaptive.DEFAULT_SETTINGS
    best = np.zeros(len(ks))
    rng = np.random.default_rng([bench.SPLITS[split]["noise"], len(p), e])  # the known check's own draws
    for s, size in enumerate(schedule.sizes):
        counts = np.bincount(stream[:size], minlength=p.size).astype(np.int64)
        now = certify_counts(counts[None], [label], k=ks, sigma=case.sigma, alpha=schedule.alphas[s])[0]
        best = np.maximum(best, now)
        target, done = adaptive.next_radii(best, radii)
        out["best"][s], out["target"][s], out["done"][s] = best, target, done
        if done.all() or s == len(schedule.sizes) - 1:
            continue
        reach = adaptive.projected_reach(counts, label, ks, target, n, alpha_final, case.sigma, "simuem", settings)
        out["projected"][s] = ~done & reach
        if not out["projected"][s].any() or size < EARLIEST:
            continue
        for key, draws in (("screen", settings.predictive_draws // 4), ("full", settings.predictive_draws)):
            drawn = adaptive.predictive_radii(counts, label, ks, n, alpha_final, case.sigma, "simuem", draws)
            out[key][s] = (drawn > target[None, :]).mean(axis=0)
        if known:
            table = counts[None, :] + rng.multinomial(n - size, p / p.sum(), size=KNOWN_DRAWS)
            drawn = certify_counts(table, np.full(KNOWN_DRAWS, label), k=ks, sigma=case.sigma, alpha=alpha_final)
            out["known"][s] = (drawn > target[None, :]).mean(axis=0)
    full = np.bincount(stream, minlength=p.size)[None]
    out["fixed"] = certify_counts(full, [label], k=ks, sigma=case.sigma, alpha=bench.ALPHA)[0]
    return out


def _example(args) -> Dict[str, np.ndarray]:
    return example_table(*args)


def sources_digest() -> str:
    """Changes with the stopping rule, the bounds and solver under it, the benchmark's cases,
    this file and numpy (whose generators make the streams)."""
    from topk_certify import _checks, _core, adaptive, stats

    digest = hashlib.sha256(np.__version__.encode())
    for module in (adaptive, stats, _checks, _core, bench, sys.modules[__name__]):
        with open(str(module.__file__), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]


def load_table(name: str, split: str, known: bool, cache: str, workers: int, examples: Optional[int] = None):
    """The case's table (arrays stacked over examples), built once and kept in `cache`."""
    probs, labels = bench.load_case(name, split)
    count = len(labels) if examples is None else examples
    path = os.path.join(cache, f"{split}_{name}_{count}{'_known' if known else ''}_{sources_digest()}.npz")
    if os.path.exists(path):
        with np.load(path) as stored:
            return {key: stored[key] for key in stored.files}
    jobs = [(name, split, e, probs[e], int(labels[e]), known) for e in range(count)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_example, jobs, chunksize=4))
    else:
        parts = [_example(job) for job in jobs]
    table = {key: np.stack([part[key] for part in parts]) for key in parts[0]}
    os.makedirs(cache, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=cache, suffix=".npz")  # in place only by an atomic rename
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **table)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise
    return table


def rule_looks(table, level: float, above: float, growth: float, start: int, confirm: int = 1, chance: str = "rule"):
    """Per example, the look where the rule stops. chance "rule" is the predictive check as the
    rule computes it (the 1,000-draw chance where a 250-draw one is within a factor 2 of the
    level at some open k); "known" is the chance from the example's true probabilities."""
    if start < EARLIEST:
        raise ValueError(f"start={start}: the chances of looks below {EARLIEST} samples are not tabled")
    if chance == "known" and np.isnan(table["known"]).all():
        raise ValueError("this table has no known-probability chances: build it with known=True")
    sizes = bench.adaptive_sizes().astype(np.float64)
    levels = np.where(table["target"] == 0, level, above) * ((sizes / start) ** growth)[None, :, None]
    projected = table["projected"]
    if chance == "known":
        chances = table["known"]
    else:
        screen = table["screen"]
        near = (projected & (screen > levels / 2) & (screen < 2 * levels)).any(axis=2, keepdims=True)
        chances = np.where(near, table["full"], screen)
    below = np.where(np.isnan(chances), False, chances < levels) & (sizes >= start)[None, :, None]
    low = below.copy()
    for back in range(1, confirm):  # below the level at this look and the confirm - 1 before, one target
        earlier = np.zeros_like(below)
        earlier[:, back:] = below[:, :-back] & (table["target"][:, back:] == table["target"][:, :-back])
        low &= earlier
    stops = (table["done"] | ~projected | low).all(axis=2)
    stops[:, -1] = True
    return stops.argmax(axis=1)


def ceiling_looks(table, case) -> np.ndarray:
    """Per example, the first look whose radii so far give every outcome of the fixed run."""
    radii = np.asarray(case.radii)
    wanted = table["fixed"][:, None, :, None] > radii
    reached = ((table["best"][..., None] > radii) >= wanted).all(axis=(2, 3))
    reached[:, -1] = True
    return reached.argmax(axis=1)


def score(table, case, looks) -> Dict[str, float]:
    """Forward passes, and the largest drop in one cell (radius, k) of the examples certified
    against the fixed run (net, as the benchmark's accuracy drop: a gain offsets a loss)."""
    sizes = bench.adaptive_sizes()
    radii = np.asarray(case.radii)
    radius = table["best"][np.arange(len(looks)), looks]
    lost = (table["fixed"][:, :, None] > radii).sum(axis=0) - (radius[:, :, None] > radii).sum(axis=0)
    return dict(rows=float(sizes[looks].sum()), drop=float(max(0, lost.max())))


def evaluate(tables, setting, chance: str = "rule") -> Dict[tuple, Dict[str, float]]:
    """Per (split, case): share of the ceiling's saving, saving, and outcomes lost (the ceiling's own too)."""
    out = {}
    for (split, name), table in tables.items():
        case = bench.CASES[name]
        rule = score(table, case, rule_looks(table, *setting, chance=chance))
        ceiling = score(table, case, ceiling_looks(table, case))
        examples = len(table["fixed"])
        out[(split, name)] = dict(
            share=ceiling["rows"] / rule["rows"],
            saving=bench.N * examples / rule["rows"],
            drop=rule["drop"],
            ceiling_drop=ceiling["drop"],
            points=100 * rule["drop"] / examples,
        )
    return out


def print_setting(setting, results, splits: Sequence[str], names: Sequence[str], chance: str) -> None:
    level, above, growth, start, confirm = setting
    print(
        f"\n{'known probabilities' if chance == 'known' else 'predictive check'}: level {level:g} at radius 0, "
        f"{above:g} above, growth {growth:g}, from {start:,} samples, confirmed at {confirm} look(s)"
    )
    for name in names:
        cells = [results[(split, name)] for split in splits]
        text = "  ".join(
            f"{split} {100 * c['share']:5.1f}% {c['saving']:5.2f}x drop {c['drop']:.0f} ({c['ceiling_drop']:.0f})"
            for split, c in zip(splits, cells)
        )
        print(f"  {name:8} {text}")
    smallest = {name: min(results[(split, name)]["share"] for split in splits) for name in names}
    beyond = {
        name: sum(results[(s, name)]["drop"] - results[(s, name)]["ceiling_drop"] for s in splits) for name in names
    }
    print(
        "  smallest share of the ceiling: "
        + ", ".join(f"{name} {100 * v:.1f}%" for name, v in smallest.items())
        + "; largest drops beyond the ceiling's (examples), summed over the splits: "
        + ", ".join(f"{name} {v:.0f}" for name, v in beyond.items())
    )


def print_calibration(tables, splits: Sequence[str], names: Sequence[str], start: int) -> None:
    """How often the fixed run certifies the radius the check was asked about, by predicted chance
    (1,000 draws), over every look from `start` samples where the projection left it open. A
    look counts once per k, and an example at many looks counts at each."""
    sizes = bench.adaptive_sizes()
    edges = (0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.4, 0.7, 1.0001)
    print(f"\ncalibration from {start:,} samples: predicted chance -> share the fixed run certifies (looks)")
    for name in names:
        for at_zero in (True, False):
            chance, certified = [], []
            for split in splits:
                t = tables[(split, name)]
                asked = t["projected"] & ~np.isnan(t["full"]) & (sizes >= start)[None, :, None]
                asked &= (t["target"] == 0) == at_zero
                chance.append(t["full"][asked])
                certified.append(np.broadcast_to(t["fixed"][:, None, :], asked.shape)[asked] > t["target"][asked])
            c, y = np.concatenate(chance), np.concatenate(certified)
            cells = []
            for lo, hi in zip(edges, edges[1:]):
                inside = (c >= lo) & (c < hi)
                cells.append(
                    f"{lo:.2f}-{min(hi, 1):.2f}: {y[inside].mean() if inside.any() else float('nan'):.2f} ({inside.sum()})"
                )
            print(f"  {name:8} {'radius 0' if at_zero else 'above 0 '}  " + "  ".join(cells))


def main(argv=None) -> int:
    from topk_certify import adaptive

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", nargs="+", choices=list(bench.SPLITS), default=list(TUNING_SPLITS))
    parser.add_argument("--case", nargs="+", choices=list(bench.CASES), default=list(bench.CASES))
    parser.add_argument("--known", action="store_true", help="also the check that knows the probabilities")
    parser.add_argument("--level", type=float, nargs="+", default=[adaptive.PREDICTIVE_CHANCE])
    parser.add_argument(
        "--above", type=float, nargs="+", default=None, help="the level above radius 0 (default: --level)"
    )
    parser.add_argument("--growth", type=float, nargs="+", default=[adaptive.PREDICTIVE_GROWTH])
    parser.add_argument("--start", type=int, nargs="+", default=[adaptive.PREDICTIVE_FROM])
    parser.add_argument("--confirm", type=int, nargs="+", default=[1], choices=[1, 2, 3])
    parser.add_argument("--calibration", action="store_true", help="print how well the predicted chance is calibrated")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "topk-certify-adaptive-tables"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if min(args.start) < EARLIEST:
        parser.error(f"--start must be at least {EARLIEST}: earlier looks are not tabled")
    tables = {
        (split, name): load_table(name, split, args.known, args.cache, args.workers)
        for split in args.split
        for name in args.case
    }
    if args.calibration:
        print_calibration(tables, args.split, args.case, adaptive.PREDICTIVE_FROM)
    for level, growth, start, confirm in itertools.product(args.level, args.growth, args.start, args.confirm):
        for above in args.above or [level]:
            setting = (level, above, growth, start, confirm)
            for chance in ("rule", "known") if args.known else ("rule",):
                print_setting(setting, evaluate(tables, setting, chance), args.split, args.case, chance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
