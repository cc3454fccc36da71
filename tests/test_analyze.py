"""`topk-certify analyze`: certified top-k accuracy against hand computations."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from topk_certify import analysis as analyze
from topk_certify.analysis import certified_accuracy, default_radii, envelope, format_samples
from topk_certify.formats.table import ResultsFormatError, load_results

# Five examples. radius@1: 0, 0.25, 0.6, 0.1, 0.5; radius@3: 0.5, 0.8, 1.1, 0.25, 0.75.
ONE = (
    "idx\tlabel\tradius@1\tradius@3\ttime\n"
    "0\t3\t0.0\t0.5\t0.1\n"
    "1\t2\t0.25\t0.8\t0.1\n"
    "2\t1\t0.6\t1.1\t0.2\n"
    "3\t0\t0.1\t0.25\t0.1\n"
    "4\t7\t0.5\t0.75\t0.2\n"
)
# Worked by hand: the share of radii strictly above r (a radius equal to r does not count).
ONE_RADII = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
ONE_TOP1 = [80.0, 40.0, 20.0, 0.0, 0.0, 0.0]  # r=0.25: 0.6 and 0.5, not the 0.25 itself
ONE_TOP3 = [100.0, 80.0, 60.0, 40.0, 20.0, 0.0]  # r=0.75: 0.8 and 1.1, not the 0.75

# The same examples in another order, one more sigma: radius@1 0.3, 0.0, 0.9, 0.1, 0.2 for
# idx 0..4; radius@3 0.3, 0.0, 1.2, 0.3, 0.4; adaptive: an n column.
TWO = (
    "idx\tlabel\tradius@1\tradius@3\tn\ttime\n"
    "3\t0\t0.1\t0.3\t100\t0.1\n"
    "1\t2\t0.0\t0.0\t500\t0.1\n"
    "0\t3\t0.3\t0.3\t1000\t0.2\n"
    "4\t7\t0.2\t0.4\t200\t0.1\n"
    "2\t1\t0.9\t1.2\t100\t0.1\n"
)
TWO_TOP1 = [80.0, 40.0, 20.0, 20.0, 0.0, 0.0]
TWO_TOP3 = [80.0, 80.0, 20.0, 20.0, 20.0, 0.0]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "topk_certify", "analyze", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def table_rows(text: str, header_start: str = "radius"):
    """{radius: [values...]} from the first aligned table in text."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [header_start])
    rows = {}
    for line in lines[start + 1 :]:
        cells = line.split()
        try:
            rows[float(cells[0])] = [float(c) for c in cells[1:]]
        except (ValueError, IndexError):
            break
    return lines[start].split(), rows


# -- numbers ------------------------------------------------------------------------------------


def test_certified_accuracy_matches_hand_computation(tmp_path):
    res = load_results(write(tmp_path, "one.tsv", ONE))
    assert res.ks == (1, 3)
    assert res.num_examples == 5
    acc = certified_accuracy(res.radius, ONE_RADII)
    np.testing.assert_allclose(100 * acc[:, 0], ONE_TOP1)
    np.testing.assert_allclose(100 * acc[:, 1], ONE_TOP3)
    # one column at a time gives (len(rs),)
    np.testing.assert_allclose(100 * certified_accuracy(res.radius[:, 0], ONE_RADII), ONE_TOP1)


def test_radius_equal_to_r_is_not_certified():
    assert certified_accuracy([0.5, 0.5, 0.7], [0.5]).tolist() == [pytest.approx(1 / 3)]
    assert certified_accuracy([0.0, 0.0], [0.0]).tolist() == [0.0]  # radius 0 = not certified


def test_certified_accuracy_against_brute_force():
    rng = np.random.default_rng(0)
    radii = np.round(rng.exponential(0.5, size=(300, 3)), 2)  # many ties with the grid
    radii[rng.random((300, 3)) < 0.2] = 0.0
    rs = np.round(np.linspace(0, 2, 41), 2)
    expected = np.array([[np.mean(radii[:, m] > r) for m in range(3)] for r in rs])
    np.testing.assert_array_equal(certified_accuracy(radii, rs), expected)


def test_default_radii():
    assert default_radii(1.1).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert default_radii(1.0).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert default_radii(0.0).tolist() == [0.0]


def test_cli_table_matches_hand_computation(tmp_path):
    path = write(tmp_path, "one.tsv", ONE)
    done = cli(path)
    assert done.returncode == 0, done.stderr
    header, rows = table_rows(done.stdout)
    assert header == ["radius", "top-1", "top-3"]
    assert sorted(rows) == ONE_RADII
    for i, r in enumerate(ONE_RADII):
        assert rows[r] == [ONE_TOP1[i], ONE_TOP3[i]]
    # aligned: every table line as wide as the header
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("radius"))
    widths = {len(line) for line in lines[start : start + 1 + len(ONE_RADII)]}
    assert len(widths) == 1
    assert "0.7 s in all, 140.0 ms per example" in done.stdout  # the time column: 0.7 s, 5 rows


def test_cli_radii_option(tmp_path):
    done = cli(write(tmp_path, "one.tsv", ONE), "--radii", "0.6", "0.1", "0.125")
    assert done.returncode == 0, done.stderr
    _, rows = table_rows(done.stdout)
    assert sorted(rows) == [0.1, 0.125, 0.6]  # sorted
    assert rows[0.1] == [60.0, 100.0]
    assert rows[0.125] == [60.0, 100.0]
    assert rows[0.6] == [0.0, 60.0]
    assert "0.125" in done.stdout


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    # An interrupted run: the last row was cut mid-write (no newline).
    path = write(tmp_path, "torn.tsv", ONE + "5\t4\t0.9\t1.")
    res = load_results(path)
    assert res.num_examples == 5
    assert len(res.notes) == 1 and "line 7" in res.notes[0]
    done = cli(path)
    assert done.returncode == 0
    assert "warning" in done.stderr and "line 7" in done.stderr
    _, rows = table_rows(done.stdout)
    assert rows[0.0] == [ONE_TOP1[0], ONE_TOP3[0]]


def test_comments_blank_lines_and_crlf(tmp_path):
    text = "# n=1000 sigma=0.25\n" + ONE.replace("\n", "\r\n") + "\r\n"
    res = load_results(write(tmp_path, "crlf.tsv", text))
    assert res.meta["n"] == "1000"
    np.testing.assert_allclose(100 * certified_accuracy(res.radius, ONE_RADII)[:, 0], ONE_TOP1)


# -- several files: the envelope ----------------------------------------------------------------


def test_envelope_is_the_best_file_per_radius(tmp_path):
    one = load_results(write(tmp_path, "sigma0.25.tsv", ONE))
    two = load_results(write(tmp_path, "sigma0.5.tsv", TWO))
    ks, best = envelope([one, two], ONE_RADII)
    assert ks == (1, 3)
    np.testing.assert_allclose(100 * best[:, 0], np.maximum(ONE_TOP1, TWO_TOP1))
    np.testing.assert_allclose(100 * best[:, 1], np.maximum(ONE_TOP3, TWO_TOP3))
    # by hand: top-1 best = 80, 40, 20, 20, 0, 0; top-3 best = 100, 80, 60, 40, 20, 0
    assert (100 * best[:, 0]).tolist() == [80.0, 40.0, 20.0, 20.0, 0.0, 0.0]
    assert (100 * best[:, 1]).tolist() == [100.0, 80.0, 60.0, 40.0, 20.0, 0.0]


def test_cli_several_files(tmp_path):
    a = write(tmp_path, "sigma0.25.tsv", ONE)
    b = write(tmp_path, "sigma0.5.tsv", TWO)
    done = cli(a, b)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    blocks = {}
    for block in out.split("\ntop-")[1:]:
        k = int(block.split("\n", 1)[0])
        blocks[k] = table_rows(block)
    header, rows = blocks[1]
    assert header == ["radius", "sigma0.25", "sigma0.5", "best"]
    for i, r in enumerate(ONE_RADII):
        assert rows[r] == [ONE_TOP1[i], TWO_TOP1[i], max(ONE_TOP1[i], TWO_TOP1[i])]
    _, rows = blocks[3]
    for i, r in enumerate(ONE_RADII):
        assert rows[r] == [ONE_TOP3[i], TWO_TOP3[i], max(ONE_TOP3[i], TWO_TOP3[i])]


def test_envelope_needs_the_same_examples(tmp_path):
    a = write(tmp_path, "a.tsv", ONE)
    b = write(tmp_path, "b.tsv", "".join(ONE.splitlines(True)[:-1]))  # idx 4 missing
    with pytest.raises(ValueError, match="same examples"):
        envelope([load_results(a), load_results(b)], [0.0])
    done = cli(a, b)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "same examples" in done.stderr
    c = write(tmp_path, "c.tsv", ONE.replace("4\t7\t", "4\t6\t"))  # same idx, other label
    done = cli(a, c)
    assert done.returncode == 2 and "label of idx 4" in done.stderr


# -- adaptive runs: the n column ----------------------------------------------------------------


def test_samples_report(tmp_path):
    path = write(tmp_path, "adaptive.tsv", TWO)
    res = load_results(path)
    assert res.n.tolist() == [100, 500, 1000, 200, 100]
    text = format_samples(res)
    assert "1,900 in all" in text and "380 per example" in text and "max 1,000" in text
    assert "fixed" not in text  # no budget known
    # The budget, from the sidecar certify writes: a fixed run draws 5 x 2,000 = 10,000.
    (tmp_path / "adaptive.tsv.meta.json").write_text(json.dumps({"n": 2000, "adaptive": True}))
    done = cli(path)
    assert done.returncode == 0, done.stderr
    assert "1,900 in all" in done.stdout
    assert "fixed run at n = 2,000 draws 10,000: 5.3x as many" in done.stdout
    assert format_samples(load_results(write(tmp_path, "fixed.tsv", ONE))) is None


# -- the plot -----------------------------------------------------------------------------------


def test_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    a = write(tmp_path, "a.tsv", ONE)
    b = write(tmp_path, "b.tsv", TWO)
    for files, name in (([a], "one.png"), ([a, b], "two.png")):
        png = tmp_path / name
        done = cli(*files, "--plot", png)
        assert done.returncode == 0, done.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5000
        assert f"plot: {png}" in done.stdout


def test_plot_curve_is_the_step_function(tmp_path):
    res = load_results(write(tmp_path, "a.tsv", ONE))
    xs, ys = analyze._step_curve(res.radius[:, 0], 1.0)
    assert xs.tolist() == [0.0, 0.1, 0.25, 0.5, 0.6, 1.0]
    assert (100 * ys).tolist() == pytest.approx([80.0, 60.0, 40.0, 20.0, 0.0, 0.0])


# -- bad input ----------------------------------------------------------------------------------


def one_line_error(done, *needles):
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_missing_file(tmp_path):
    one_line_error(cli(tmp_path / "nope.tsv"), "nope.tsv", "No such file")


def test_cli_file_without_radius_columns(tmp_path):
    path = write(tmp_path, "radius.tsv", "idx\tlabel\tradius\n0\t1\t0.5\n")
    one_line_error(cli(path), "radius.tsv", "no radius@K columns")


@pytest.mark.parametrize(
    "text, needles",
    [
        ("idx\tradius@1\n0\t0.5\n1\t0.5\t9\n", [":3:", "expected 2"]),
        ("idx\tradius@1\n0\t0.5\n1\tnan\n", [":3:", "radius@1"]),
        ("idx\tradius@1\n0\t-0.5\n", [":2:", "radius@1"]),
        ("idx\tradius@1\n0\t0.5\nx\t0.5\n", [":3:", "idx"]),
        ("idx\tradius@1\n0\t0.5\n0\t0.7\n", [":3:", "appears twice"]),
        ("idx\tradius@1\tradius@1\n0\t0.5\t0.5\n", [":1:", "twice"]),
        ("idx\tradius@1\n", ["no finished rows"]),
        ("", ["empty"]),
    ],
)
def test_cli_malformed_files(tmp_path, text, needles):
    path = write(tmp_path, "bad.tsv", text)
    with pytest.raises(ResultsFormatError):
        load_results(path)
    one_line_error(cli(path), "bad.tsv", *needles)


def test_cli_bad_radii_and_plot_path(tmp_path):
    path = write(tmp_path, "one.tsv", ONE)
    one_line_error(cli(path, "--radii", "-1"), "--radii")
    one_line_error(cli(path, "--radii", "inf"), "--radii")
    pytest.importorskip("matplotlib")
    one_line_error(cli(path, "--plot", tmp_path / "no" / "dir" / "x.png"), "cannot write")
