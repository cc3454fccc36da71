"""Certified top-k accuracy against the radius, from certify's OUT files (`formats.table`),
and the accuracy and abstention rate of the smoothed classifier's predictions, from
predict's OUT files (`formats.predictions`).

Certified top-k accuracy at radius r is the fraction of examples whose radius@K is strictly
above r (the certificate covers perturbations of norm strictly below the radius, and a radius
of 0 means "not certified"), as in the paper's tables (Jia et al., ICLR 2020, Section 4).
With several files over the same examples (e.g. one per sigma) the envelope is, per radius and
k, the best accuracy over the files.

Library use::

    from topk_certify.analysis import certified_accuracy
    from topk_certify.formats.table import load_results
    res = load_results("out.tsv")
    certified_accuracy(res.radius, [0.0, 0.5])   # (2, len(res.ks)) fractions

matplotlib is needed only for `plot_curves` (imported when called).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ._checks import clean_radii
from .formats.predictions import Predictions
from .formats.table import Results

__all__ = [
    "certified_accuracy",
    "clean_radii",
    "default_radii",
    "envelope",
    "format_table",
    "format_file_report",
    "format_envelope_report",
    "format_samples",
    "plot_curves",
    "PredictionSummary",
    "summarize_predictions",
    "format_predictions_report",
]

RADIUS_STEP = 0.25


# -- numbers ------------------------------------------------------------------------------------


def certified_accuracy(radii, rs) -> np.ndarray:
    """Fraction of examples certified at each radius r: mean(radius > r) (strict).

    radii: (E,) or (E, K) radii (0 = not certified); rs: the radii r to evaluate.
    Returns float64 (len(rs),) or (len(rs), K).
    """
    radii = np.asarray(radii, dtype=np.float64)
    rs = np.asarray(rs, dtype=np.float64).reshape(-1)
    if radii.ndim not in (1, 2) or radii.shape[0] == 0:
        raise ValueError(f"radii must be a non-empty (E,) or (E, K) array, got shape {radii.shape}")
    columns = radii.reshape(radii.shape[0], -1)
    out = np.empty((rs.size, columns.shape[1]), dtype=np.float64)
    for m in range(columns.shape[1]):
        ordered = np.sort(columns[:, m])
        # number of radii > r = E - number of radii <= r
        out[:, m] = (ordered.size - np.searchsorted(ordered, rs, side="right")) / ordered.size
    return out[:, 0] if radii.ndim == 1 else out


def default_radii(max_radius: float, step: float = RADIUS_STEP) -> np.ndarray:
    """0, step, 2 step, ... up to max_radius rounded up to a multiple of step."""
    top = math.ceil(max(float(max_radius), 0.0) / step - 1e-9)
    return np.arange(top + 1, dtype=np.float64) * step


def _check_same_examples(results: Sequence[Results]) -> None:
    first = results[0]
    order = np.argsort(first.idx)
    for other in results[1:]:
        if other.num_examples != first.num_examples or not np.array_equal(np.sort(other.idx), first.idx[order]):
            only_first = np.setdiff1d(first.idx, other.idx)
            only_other = np.setdiff1d(other.idx, first.idx)
            detail = (
                f"idx {only_first[0]} is only in {first.path}"
                if only_first.size
                else f"idx {only_other[0]} is only in {other.path}"
            )
            raise ValueError(
                f"the envelope needs files over the same examples, but {first.path} has "
                f"{first.num_examples} and {other.path} has {other.num_examples} ({detail}); "
                "analyze them one at a time"
            )
        if first.labels is not None and other.labels is not None:
            mine = first.labels[order]
            theirs = other.labels[np.argsort(other.idx)]
            differ = np.flatnonzero(mine != theirs)
            if differ.size:
                i = int(first.idx[order][differ[0]])
                raise ValueError(
                    f"{first.path} and {other.path} disagree on the label of idx {i} "
                    "(not the same data?); analyze them one at a time"
                )


def envelope(results: Sequence[Results], rs) -> Tuple[Tuple[int, ...], np.ndarray]:
    """The paper's envelope: per radius and k, the best certified accuracy over the files.

    The files must hold the same examples (same idx set, and the same labels where both have
    a label column), else ValueError. Returns (ks, acc) with ks every k found in any file
    (ascending) and acc float64 (len(rs), len(ks)), each k maximised over the files having it.
    """
    if not results:
        raise ValueError("envelope needs at least one file")
    _check_same_examples(results)
    rs = np.asarray(rs, dtype=np.float64).reshape(-1)
    ks = tuple(sorted({k for res in results for k in res.ks}))
    best = np.zeros((rs.size, len(ks)), dtype=np.float64)
    for res in results:
        acc = certified_accuracy(res.radius, rs)
        for m, k in enumerate(res.ks):
            column = ks.index(k)
            best[:, column] = np.maximum(best[:, column], acc[:, m])
    return ks, best


# -- text ---------------------------------------------------------------------------------------


def _radius_labels(rs: np.ndarray) -> List[str]:
    decimals = 2
    while decimals < 6 and any(abs(r - round(r, decimals)) > 1e-12 for r in rs):
        decimals += 1
    return [f"{r:.{decimals}f}" for r in rs]


def _table(column_names: Sequence[str], rs: np.ndarray, values: np.ndarray) -> str:
    """Rows: radius, then one percentage (one decimal) per column; right-aligned."""
    cells = [["radius", *column_names]]
    for label, row in zip(_radius_labels(rs), values):
        cells.append([label, *(f"{100.0 * v:.1f}" for v in row)])
    widths = [max(len(row[c]) for row in cells) for c in range(len(cells[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in cells)


def format_table(ks: Sequence[int], rs, acc: np.ndarray) -> str:
    """One file's table: a row per radius, a column per k (`top-K`), percentages."""
    rs = np.asarray(rs, dtype=np.float64).reshape(-1)
    return _table([f"top-{k}" for k in ks], rs, np.asarray(acc).reshape(rs.size, len(ks)))


def _unique_names(results: Sequence[Results]) -> List[str]:
    names = [res.name for res in results]
    if len(set(names)) < len(names):
        names = [res.path for res in results]
    if len(set(names)) < len(names):
        names = [f"{name}#{i + 1}" for i, name in enumerate(names)]
    return names


def format_samples(res: Results, n_max: Optional[int] = None) -> Optional[str]:
    """The samples an adaptive run spent (its `n` column), or None without one.

    n_max (the per-example budget) defaults to the run's recorded `n` (OUT.meta.json, or an
    `n=` in a `#` comment line); with it, the line compares to a fixed run drawing n_max for
    every example.
    """
    if res.n is None:
        return None
    total, count = int(res.n.sum()), res.num_examples
    text = (
        f"samples: {total:,} in all, {total / count:,.0f} per example on average "
        f"(min {int(res.n.min()):,}, max {int(res.n.max()):,})"
    )
    if n_max is None:
        try:
            n_max = int(res.meta["n"])  # type: ignore[call-overload]
        except (KeyError, TypeError, ValueError):
            n_max = None
    if n_max:
        fixed = n_max * count
        text += f"; a fixed run at n = {n_max:,} draws {fixed:,}"
        if total > 0:
            text += f": {fixed / total:.1f}x as many"
    return text


def _format_time(res: Results) -> Optional[str]:
    if res.time is None:
        return None
    total = float(res.time.sum())
    return f"time: {total:.1f} s in all, {1000.0 * total / res.num_examples:.1f} ms per example"


def format_file_report(res: Results, rs, n_max: Optional[int] = None) -> str:
    """A file's heading, its table, and its samples and time lines."""
    rs = np.asarray(rs, dtype=np.float64).reshape(-1)
    lines = [
        f"{res.path}: {res.num_examples} examples; certified top-k accuracy (%) = share with radius > r",
        format_table(res.ks, rs, certified_accuracy(res.radius, rs)),
    ]
    lines += [line for line in (format_samples(res, n_max), _format_time(res)) if line]
    return "\n".join(lines)


def format_envelope_report(results: Sequence[Results], rs, n_max: Optional[int] = None) -> str:
    """Several files: one block per k with a column per file and the best of them."""
    rs = np.asarray(rs, dtype=np.float64).reshape(-1)
    ks, best = envelope(results, rs)
    names = _unique_names(results)
    count = results[0].num_examples
    parts = [
        f"{len(results)} files over the same {count} examples; certified top-k accuracy (%) "
        "= share with radius > r; best = the envelope (best file per radius)",
    ]
    for name, res in zip(names, results):
        extra = [line for line in (format_samples(res, n_max), _format_time(res)) if line]
        parts.append(f"  {name}: {res.path}" + "".join(f"\n    {line}" for line in extra))
    accs = [certified_accuracy(res.radius, rs) for res in results]
    for m, k in enumerate(ks):
        columns, values = [], []
        for name, res, acc in zip(names, results, accs):
            if k in res.ks:
                columns.append(name)
                values.append(acc[:, res.ks.index(k)])
        columns.append("best")
        values.append(best[:, m])
        parts.append(f"\ntop-{k}\n" + _table(columns, rs, np.stack(values, axis=1)))
    return "\n".join(parts)


# -- predictions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionSummary:
    """What a predict OUT says about the smoothed classifier.

    accuracy: the share of all examples whose predicted set holds the true label (an
        abstention counts as wrong: Cohen et al.'s accuracy of the smoothed classifier);
    abstention_rate: the share of examples without a prediction;
    answered_accuracy: the accuracy among the examples with a prediction (None if none).
    """

    examples: int
    answered: int
    correct: int
    k: Optional[int]

    @property
    def accuracy(self) -> float:
        return self.correct / self.examples

    @property
    def abstention_rate(self) -> float:
        return (self.examples - self.answered) / self.examples

    @property
    def answered_accuracy(self) -> Optional[float]:
        return self.correct / self.answered if self.answered else None


def summarize_predictions(pred: Predictions) -> PredictionSummary:
    """Counts of a parsed predict OUT (at least one example, as the reader guarantees)."""
    if pred.num_examples == 0:
        raise ValueError(f"{pred.path} has no examples to summarize")
    answered = pred.num_examples - int(pred.abstained.sum())
    return PredictionSummary(pred.num_examples, answered, int(pred.correct.sum()), pred.k)


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}% ({part} of {whole})"


def format_predictions_report(pred: Predictions) -> str:
    """A predict OUT's accuracy, abstention rate and accuracy among answered examples."""
    s = summarize_predictions(pred)
    size = f"top-{s.k} sets" if s.k is not None else "no set returned"
    lines = [
        f"{pred.path}: {s.examples} examples, predictions of the smoothed classifier ({size})",
        f"  accuracy (true label in the set; abstaining counts as wrong): {_share(s.correct, s.examples)}",
        f"  abstained: {_share(s.examples - s.answered, s.examples)}",
        "  accuracy when answering: " + (_share(s.correct, s.answered) if s.answered else "-"),
    ]
    if pred.time is not None:
        total = float(pred.time.sum())
        lines.append(f"  time: {total:.1f} s in all, {1000.0 * total / s.examples:.1f} ms per example")
    return "\n".join(lines)


# -- plot ---------------------------------------------------------------------------------------


def _step_curve(radii: np.ndarray, top: float) -> Tuple[np.ndarray, np.ndarray]:
    """Exact points of r -> mean(radii > r) on [0, top], for drawstyle='steps-post'."""
    xs = np.unique(np.concatenate([[0.0], radii[(radii > 0) & (radii < top)], [top]]))
    return xs, certified_accuracy(radii, xs)


def plot_curves(results: Sequence[Results], path: str, title: Optional[str] = None) -> None:
    """Certified accuracy against the radius, one curve per k, saved to `path` (format from its
    extension, e.g. .png). With several files: each file's curves thin, the envelope thick.

    Uses matplotlib's Agg canvas directly (no pyplot, no change to the global backend).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'topk-certify[plot]'") from None

    results = list(results)
    several = len(results) > 1
    top = max(float(res.radius.max()) for res in results)
    top = max(top * 1.05, RADIUS_STEP)
    ks = sorted({k for res in results for k in res.ks})
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = {k: f"C{i % 10}" for i, k in enumerate(ks)}
    styles = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    names = _unique_names(results)
    for f, (name, res) in enumerate(zip(names, results)):
        for m, k in enumerate(res.ks):
            xs, ys = _step_curve(res.radius[:, m], top)
            if several:
                ax.plot(
                    xs,
                    100 * ys,
                    drawstyle="steps-post",
                    color=colors[k],
                    lw=0.9,
                    alpha=0.7,
                    ls=styles[f % len(styles)],
                    label=f"top-{k}, {name}",
                )
            else:
                ax.plot(xs, 100 * ys, drawstyle="steps-post", color=colors[k], lw=1.8, label=f"top-{k}")
    if several:
        _check_same_examples(results)
        for k in ks:
            having = [res.radius[:, res.ks.index(k)] for res in results if k in res.ks]
            xs = np.unique(np.concatenate([_step_curve(r, top)[0] for r in having]))
            ys = np.max([certified_accuracy(r, xs) for r in having], axis=0)
            ax.plot(xs, 100 * ys, drawstyle="steps-post", color=colors[k], lw=2.2, label=f"top-{k}, best")
    ax.set_xlabel("radius (l2)")
    ax.set_ylabel("certified top-k accuracy (%)")
    ax.set_xlim(0, top)
    ax.set_ylim(0, 101)
    ax.grid(True, alpha=0.3)
    if title is None:
        count = results[0].num_examples
        title = (
            f"certified top-k accuracy, {names[0]} ({count} examples)"
            if not several
            else f"certified top-k accuracy, {len(results)} files ({count} examples)"
        )
    ax.set_title(title)
    ax.legend(fontsize="small" if several else "medium", loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
