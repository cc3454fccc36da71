"""Reproduce the published radii of Jia et al. (ICLR 2020) from their published counts.

result_k3_sigma0.25_alpha0.001.txt: `idx<TAB>radius`, idx 1-based, the radius of the true
label for top-3, sigma = 0.25, alpha = 0.001, simuem, printed to 3 significant digits
(Python's '{:.3}' style: trailing zeros dropped, so "1.1" is 1.10 and "0.0" is zero) from a
bisection to 1e-5 on [0, 10] that can land up to 1e-5 *below* the exact root.

So with B their bisection result and P the printed text:  R - 1e-5 <= B <= R  and
|P - B| <= h = half a unit of the 3rd significant digit of P.  The exact radius R must lie in
[P - h, P + h + 1e-5]: below P - h is a radius smaller than theirs (wrong or too
conservative), above P + h + 1e-5 is larger than their bisection allows.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import topk_certify

K, SIGMA, ALPHA = 3, 0.25, 0.001
BISECT_TOL = 1e-5
FLOAT_SLACK = 1e-12


def _half_unit(text: str) -> float:
    v = float(text)
    if v == 0:
        return 0.0
    return 0.5 * 10.0 ** (math.floor(math.log10(abs(v))) - 2)


def _window(text: str):
    p = float(text)
    h = _half_unit(text)
    return p - h - FLOAT_SLACK, p + h + BISECT_TOL + FLOAT_SLACK


def test_half_unit_helper():
    assert _half_unit("1.1") == pytest.approx(0.005)
    assert _half_unit("0.55") == pytest.approx(0.0005)
    assert _half_unit("0.00876") == pytest.approx(0.000005)
    assert _half_unit("0.0") == 0.0


@pytest.fixture(scope="module")
def ours(cifar_rows):
    counts = np.array([r for r, _ in cifar_rows], dtype=np.int64)
    labels = np.array([lab for _, lab in cifar_rows], dtype=np.int64)
    return certify_published(counts, labels)


def certify_published(counts, labels):
    return topk_certify.certify_counts(counts, labels, k=K, sigma=SIGMA, alpha=ALPHA, bound="simuem")


def test_files_line_up(cifar_rows, published_radii):
    assert len(cifar_rows) == 500
    assert [i for i, _ in published_radii] == list(range(1, len(cifar_rows) + 1))
    assert all(len(r) == 10 and 0 <= lab < 10 and sum(r) == 100_000 for r, lab in cifar_rows)


def test_every_published_radius(ours, published_radii, cifar_rows):
    assert ours.shape == (len(cifar_rows),) and ours.dtype == np.float64
    bad = []
    for (idx, text), r in zip(published_radii, ours):
        lo, hi = _window(text)
        if not (lo <= r <= hi):
            row, lab = cifar_rows[idx - 1]
            side = "below" if r < lo else "above"
            bad.append(
                f"line {idx}: counts {row} label {lab}: ours {r!r} {side} the window "
                f"[{lo:.6g}, {hi:.6g}] of published {text}"
            )
    assert not bad, f"{len(bad)} of {len(ours)} radii off:\n" + "\n".join(bad)


def test_certified_set_matches(ours, published_radii):
    # published 0.0 <=> not certified, up to radii in (0, 1e-5] their bisection rounds to 0
    pub = np.array([float(t) for _, t in published_radii])
    clear = (ours == 0) | (ours > BISECT_TOL)
    assert np.array_equal((ours > 0)[clear], (pub > 0)[clear])
    assert np.sum(pub == 0) == 29  # the file's own count: a guard on the parsing


@pytest.mark.parametrize("r", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_certified_accuracy_curve(ours, published_radii, r):
    # certified top-3 accuracy at radius r: fraction with R > r; rows whose window straddles
    # r may legitimately fall either way
    pub_windows = [_window(t) for _, t in published_radii]
    sure_in = sum(lo > r for lo, _ in pub_windows)
    maybe_in = sum(hi > r for _, hi in pub_windows)
    got = int(np.sum(ours > r))
    assert sure_in <= got <= maybe_in, (r, sure_in, got, maybe_in)


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "topk_certify", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def _parse_tsv(text):
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0].split("\t")
    return header, [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def test_cli_reproduces_published(reference_dir, cifar_rows, published_radii, ours):
    proc = _run_cli("radius", reference_dir / "cifar0.25.txt", "--k", K, "--sigma", SIGMA, "--alpha", ALPHA)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    header, rows = _parse_tsv(proc.stdout)
    assert {"idx", "label", "radius"} <= set(header), header
    assert len(rows) == len(cifar_rows)
    assert [int(r["idx"]) for r in rows] == list(range(len(cifar_rows)))  # 0-based, in order
    assert [int(r["label"]) for r in rows] == [lab for _, lab in cifar_rows]
    radii = np.array([float(r["radius"]) for r in rows])
    np.testing.assert_array_equal(radii, ours)  # repr round-trips exactly
    for (idx, text), r in zip(published_radii, radii):
        lo, hi = _window(text)
        assert lo <= r <= hi, (idx, text, r)


def test_reference_solver_reproduces_published_subset(cifar_rows, published_radii):
    # guards the mpmath reference the other tests compare against
    import reference_solver as rs

    for (idx, text), (row, lab) in list(zip(published_radii, cifar_rows))[::25]:
        r = float(rs.certify_reference(row, lab, K, SIGMA, ALPHA, "simuem"))
        lo, hi = _window(text)
        assert lo <= r <= hi, (idx, text, r)
