"""The `topk-certify radius` command (run as `python -m topk_certify radius ...`).

COUNTS_FILE: one example a line, whitespace-separated label counts then the label.
Output: TSV with a header naming at least idx, label, radius; one row per input line in
input order, idx 0-based, radius printed with repr (float(text) round-trips exactly).
Bad input: exit status 2, a one-line message on stderr, no traceback.  (argparse's own
errors print a `usage:` block before their one-line message; that block is allowed.)
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import topk_certify

ROWS = [
    ([9000, 600, 300, 100], 0),
    ([10, 20, 9970, 0], 2),
    ([2500, 2500, 2500, 2500], 3),
    ([0, 1, 0, 9999], 3),
    ([4000, 5000, 1000, 0], 0),
    ([1, 0, 0, 0], 0),
]


def _write_counts(path, rows, sep=" "):
    path.write_text("".join(sep.join(str(v) for v in row + [lab]) + "\n" for row, lab in rows))
    return path


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "topk_certify", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def _parse_tsv(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no output"
    header = lines[0].split("\t")
    assert {"idx", "label", "radius"} <= set(header), header
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    for r in rows:
        assert len(r) == len(header)
    return header, rows


def _expected(rows, k, sigma, alpha, bound):
    counts = np.array([r for r, _ in rows], dtype=np.int64)
    labels = np.array([lab for _, lab in rows], dtype=np.int64)
    return topk_certify.certify_counts(counts, labels, k=k, sigma=sigma, alpha=alpha, bound=bound)


@pytest.fixture
def counts_file(tmp_path):
    return _write_counts(tmp_path / "counts.txt", ROWS)


@pytest.mark.parametrize("bound", ["simuem", "binocp"])
@pytest.mark.parametrize("k,sigma,alpha", [(1, 0.25, 0.001), (2, 0.5, 1e-6), (3, 50.0, 0.01)])
def test_stdout_matches_certify_counts(counts_file, bound, k, sigma, alpha):
    proc = _run("radius", counts_file, "--k", k, "--sigma", sigma, "--alpha", alpha, "--bound", bound)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    _, rows = _parse_tsv(proc.stdout)
    assert [int(r["idx"]) for r in rows] == list(range(len(ROWS)))
    assert [int(r["label"]) for r in rows] == [lab for _, lab in ROWS]
    want = _expected(ROWS, k, sigma, alpha, bound)
    got = np.array([float(r["radius"]) for r in rows])
    np.testing.assert_array_equal(got, want)
    assert np.any(want > 0) and np.any(want == 0)


def test_default_bound_is_simuem(counts_file):
    a = _run("radius", counts_file, "--k", 2, "--sigma", 0.25, "--alpha", 0.001)
    b = _run("radius", counts_file, "--k", 2, "--sigma", 0.25, "--alpha", 0.001, "--bound", "simuem")
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert _parse_tsv(a.stdout) == _parse_tsv(b.stdout)
    c = _run("radius", counts_file, "--k", 2, "--sigma", 0.25, "--alpha", 0.001, "--bound", "binocp")
    assert c.returncode == 0
    assert _parse_tsv(c.stdout) != _parse_tsv(a.stdout)


def test_rows_in_input_order(tmp_path):
    rev = list(reversed(ROWS))
    path = _write_counts(tmp_path / "rev.txt", rev)
    proc = _run("radius", path, "--k", 1, "--sigma", 0.25, "--alpha", 0.001)
    assert proc.returncode == 0, proc.stderr
    _, rows = _parse_tsv(proc.stdout)
    got = np.array([float(r["radius"]) for r in rows])
    np.testing.assert_array_equal(got, _expected(rev, 1, 0.25, 0.001, "simuem"))
    assert [int(r["label"]) for r in rows] == [lab for _, lab in rev]


def test_tab_separated_input(tmp_path):
    path = _write_counts(tmp_path / "tabs.txt", ROWS, sep="\t")
    proc = _run("radius", path, "--k", 1, "--sigma", 0.25, "--alpha", 0.001)
    assert proc.returncode == 0, proc.stderr
    _, rows = _parse_tsv(proc.stdout)
    np.testing.assert_array_equal([float(r["radius"]) for r in rows], _expected(ROWS, 1, 0.25, 0.001, "simuem"))


def test_output_file(counts_file, tmp_path):
    out = tmp_path / "radii.tsv"
    proc = _run("radius", counts_file, "--k", 2, "--sigma", 0.25, "--alpha", 0.001, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    _, rows = _parse_tsv(out.read_text())
    assert len(rows) == len(ROWS)
    np.testing.assert_array_equal([float(r["radius"]) for r in rows], _expected(ROWS, 2, 0.25, 0.001, "simuem"))
    ref = _run("radius", counts_file, "--k", 2, "--sigma", 0.25, "--alpha", 0.001)
    assert _parse_tsv(out.read_text()) == _parse_tsv(ref.stdout)


# ----------------------------------------------------------------------------------------
# Bad input: exit 2, one line on stderr, no traceback
# ----------------------------------------------------------------------------------------


def _message_lines(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    # argparse: "usage: prog ..." plus indented continuation lines, then "prog: error: ..."
    return [line for line in lines if not line.startswith("usage:") and not line.startswith(" ")]


def _assert_bad(proc, pattern):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Panic" not in proc.stderr, proc.stderr
    msg = _message_lines(proc.stderr)
    assert len(msg) == 1, proc.stderr
    assert re.search(pattern, msg[0]), (pattern, msg[0])


def test_missing_file(tmp_path):
    path = tmp_path / "no_such_counts.txt"
    proc = _run("radius", path, "--k", 1, "--sigma", 0.25, "--alpha", 0.001)
    _assert_bad(proc, r"(?i)no_such_counts\.txt|no such file|not found")


@pytest.mark.parametrize(
    "content,pattern",
    [
        ("10 20 30 0\n10 abc 30 1\n", r"(?i)line\s*2|abc|integer|invalid|malformed"),
        ("10 20 30 0\n10 2.5 30 1\n", r"(?i)line\s*2|2\.5|integer|invalid|malformed"),
        ("10 20 30 0\n10 20 1\n", r"(?i)line\s*2|column|field|malformed|expected"),
        ("10 20 30 0\n10 -20 30 1\n", r"(?i)line\s*2|negative|count"),
        ("10 20 30 0\n0 0 0 1\n", r"(?i)line\s*2|row\s*1|zero|sum|sample|count"),
        ("5\n", r"(?i)line\s*1|column|field|class|malformed|label|count"),
    ],
)
def test_malformed_lines(tmp_path, content, pattern):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    proc = _run("radius", path, "--k", 1, "--sigma", 0.25, "--alpha", 0.001)
    _assert_bad(proc, pattern)


@pytest.mark.parametrize("label", [3, 7, -1])
def test_label_out_of_range(tmp_path, label):
    path = tmp_path / "bad_label.txt"
    path.write_text(f"10 20 30 0\n10 20 30 {label}\n")
    proc = _run("radius", path, "--k", 1, "--sigma", 0.25, "--alpha", 0.001)
    _assert_bad(proc, r"(?i)label")


@pytest.mark.parametrize("k", [4, 5, 0])
def test_k_out_of_range(counts_file, k):
    proc = _run("radius", counts_file, "--k", k, "--sigma", 0.25, "--alpha", 0.001)
    _assert_bad(proc, r"\bk\b|--k")


@pytest.mark.parametrize("sigma", ["0", "-0.25", "nan", "inf", "abc"])
def test_bad_sigma(counts_file, sigma):
    proc = _run("radius", counts_file, "--k", 1, "--sigma", sigma, "--alpha", 0.001)
    _assert_bad(proc, r"sigma")


@pytest.mark.parametrize("alpha", ["0", "1", "-0.1", "2"])
def test_bad_alpha(counts_file, alpha):
    proc = _run("radius", counts_file, "--k", 1, "--sigma", 0.25, "--alpha", alpha)
    _assert_bad(proc, r"alpha")


def test_unknown_bound(counts_file):
    proc = _run("radius", counts_file, "--k", 1, "--sigma", 0.25, "--alpha", 0.001, "--bound", "hoeffding")
    _assert_bad(proc, r"bound|hoeffding")


def test_repeated_k_is_refused(counts_file):
    # Two radius@3 columns would make the table ambiguous (analyze refuses such a file).
    proc = _run("radius", counts_file, "--k", 3, 1, 3, "--sigma", 0.25, "--alpha", 0.001)
    _assert_bad(proc, r"distinct")


def test_binary_file_is_named(tmp_path):
    path = tmp_path / "counts.bin"
    path.write_bytes(b"\xff\xfe\x00\x01 3 4 0\n")
    proc = _run("radius", path, "--k", 1, "--sigma", 0.25, "--alpha", 0.001)
    _assert_bad(proc, r"counts\.bin.*not a text file")
