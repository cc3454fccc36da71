"""The predict OUT format (formats/predictions.py) both ways, and `analyze` on predict output:
accuracy (abstaining counts as wrong) and abstention rate against hand counts."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest

from topk_certify.analysis import format_predictions_report, summarize_predictions
from topk_certify.cli.analyze import analyze_files
from topk_certify.cli.errors import CliError
from topk_certify.formats import FormatError
from topk_certify.formats.predictions import (
    COLUMNS,
    PredictionsFormatError,
    is_predictions,
    load_predictions,
    row_cells,
)

# Six examples of top-2 sets: idx 0 right, 1 abstained, 2 wrong, 3 right (second place),
# 4 abstained, 5 right. Accuracy 3/6, abstained 2/6, accuracy when answering 3/4.
TOP2 = (
    "idx\tlabel\tpredict\tcorrect\ttime\n"
    "0\t3\t3,1\t1\t0.5\n"
    "20\t1\t-1\t0\t0.25\n"
    "40\t2\t5,0\t0\t0.25\n"
    "60\t7\t0,7\t1\t0.5\n"
    "80\t0\t-1\t0\t0.25\n"
    "100\t9\t9,2\t1\t0.25\n"
)

# Cohen et al.'s predict.py output: top-1, times as str(timedelta).
COHEN = (
    "idx\tlabel\tpredict\tcorrect\ttime\n"
    "0\t3\t3\t1\t0:00:01.500000\n"
    "100\t8\t-1\t0\t0:00:01.250000\n"
    "200\t8\t1\t0\t0:00:01.250000\n"
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_reads_sets_abstentions_and_times(tmp_path):
    pred = load_predictions(write(tmp_path, "p.tsv", TOP2))
    assert pred.k == 2 and pred.num_examples == 6
    assert pred.idx.tolist() == [0, 20, 40, 60, 80, 100]
    assert pred.labels.tolist() == [3, 1, 2, 7, 0, 9]
    assert pred.predicted.tolist() == [[3, 1], [-1, -1], [5, 0], [0, 7], [-1, -1], [9, 2]]
    assert pred.abstained.tolist() == [False, True, False, False, True, False]
    assert pred.correct.tolist() == [True, False, False, True, False, True]
    assert pred.time is not None and pred.time.sum() == pytest.approx(2.0)
    s = summarize_predictions(pred)
    assert (s.examples, s.answered, s.correct) == (6, 4, 3)
    assert (s.accuracy, s.abstention_rate, s.answered_accuracy) == (0.5, 2 / 6, 0.75)


def test_reads_cohens_predict_output(tmp_path):
    pred = load_predictions(write(tmp_path, "cohen.tsv", COHEN))
    assert pred.k == 1 and pred.predicted[:, 0].tolist() == [3, -1, 1]
    assert pred.time is not None and pred.time.tolist() == [1.5, 1.25, 1.25]
    report = format_predictions_report(pred)
    assert "accuracy (true label in the set; abstaining counts as wrong): 33.3% (1 of 3)" in report
    assert "abstained: 33.3% (1 of 3)" in report
    assert "accuracy when answering: 50.0% (1 of 2)" in report


def test_rows_written_are_read_back(tmp_path):
    rng = np.random.default_rng(0)
    rows = [COLUMNS]
    sets, labels = [], []
    for idx in range(50):
        label = int(rng.integers(0, 10))
        predicted = [-1, -1, -1] if idx % 4 == 0 else [int(v) for v in rng.permutation(10)[:3]]
        rows.append(row_cells(idx * 7, label, predicted, seconds=rng.uniform(0, 2)))
        sets.append(predicted)
        labels.append(label)
    path = write(tmp_path, "round.tsv", "".join("\t".join(row) + "\n" for row in rows))
    pred = load_predictions(path)
    assert pred.predicted.tolist() == sets
    assert pred.labels.tolist() == labels and pred.idx.tolist() == [7 * i for i in range(50)]
    assert pred.correct.tolist() == [s[0] >= 0 and lab in s for s, lab in zip(sets, labels)]
    assert pred.correct.any() and not pred.correct.all()


def test_row_cells():
    assert row_cells(3, 5, [5, 2], 0.123456) == ["3", "5", "5,2", "1", "0.1235"]
    assert row_cells(3, 5, [1, 2], 1.0) == ["3", "5", "1,2", "0", "1.0000"]
    assert row_cells(3, 5, np.array([-1, -1]), 1.0)[2:4] == ["-1", "0"]
    for bad in ([], [1, 1], [-1, 2], [3, -2]):
        with pytest.raises(ValueError):
            row_cells(0, 1, bad, 0.0)


def test_all_abstained_and_a_torn_last_line(tmp_path):
    text = "# sigma=0.25 n=1000\nidx\tlabel\tpredict\tcorrect\ttime\n0\t1\t-1\t0\t0.1\n1\t2\t-1\t0\t0.1\n2\t2\t2"
    pred = load_predictions(write(tmp_path, "torn.tsv", text))
    assert pred.k is None and pred.abstained.all() and pred.num_examples == 2
    assert pred.meta == {"sigma": "0.25", "n": "1000"}
    assert len(pred.notes) == 1 and "line 5" in pred.notes[0]
    assert "no set returned" in format_predictions_report(pred)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n", "no finished rows"),
        ("idx\tlabel\tcorrect\ttime\n0\t1\t1\t0.1\n", "no predict column"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\n", ":2: expected 5 tab-separated fields"),
        ("idx\tlabel\tpredict\tcorrect\ttime\nx\t1\t1\t1\t0.1\n", ":2: idx must be an integer"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t-3\t1\t0\t0.1\n", ":2: label must be an integer >= 0"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\t0.1\n0\t1\t1\t1\t0.1\n", ":3: idx 0 appears twice"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1,1\t1\t0.1\n", "distinct labels"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1;2\t1\t0.1\n", "distinct labels"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t-2\t0\t0.1\n", "distinct labels"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\tyes\t0.1\n", "correct must be 0 or 1"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t2\t1\t0.1\n", "correct is 1, but label 1 is not in the set 2"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t-1\t1\t0.1\n", "not in the set -1"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1,2\t0\t0.1\n", "correct is 0, but label 1 is in the set"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1,2\t1\t0.1\n1\t1\t1\t1\t0.1\n", ":3: every predicted set"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path, text, message):
    path = write(tmp_path, "bad.tsv", text)
    with pytest.raises(PredictionsFormatError, match=message) as info:
        load_predictions(path)
    assert isinstance(info.value, FormatError) and isinstance(info.value, ValueError)
    assert path in str(info.value)


def test_told_apart_from_certify_output(tmp_path):
    assert is_predictions(write(tmp_path, "p.tsv", "# c\n\nidx\tlabel\tpredict\tcorrect\ttime\n"))
    assert not is_predictions(write(tmp_path, "c.tsv", "idx\tlabel\tradius@1\ttime\n0\t1\t0.5\t0.1\n"))
    # Cohen's certify.py output has a predict column and a radius: it is certify output.
    assert not is_predictions(write(tmp_path, "r.tsv", "idx\tlabel\tpredict\tradius@1\tcorrect\ttime\n"))
    assert not is_predictions(write(tmp_path, "s.tsv", "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"))
    assert not is_predictions(write(tmp_path, "e.tsv", ""))


# -- analyze --------------------------------------------------------------------------------------


def test_analyze_prints_accuracy_and_abstention(tmp_path):
    path = write(tmp_path, "p.tsv", TOP2)
    out, err = io.StringIO(), io.StringIO()
    assert analyze_files([path], out=out, err=err) == []
    text = out.getvalue()
    assert f"{path}: 6 examples, predictions of the smoothed classifier (top-2 sets)" in text
    assert "abstaining counts as wrong): 50.0% (3 of 6)" in text
    assert "abstained: 33.3% (2 of 6)" in text
    assert "accuracy when answering: 75.0% (3 of 4)" in text
    assert "time: 2.0 s in all, 333.3 ms per example" in text
    assert err.getvalue() == ""


def test_analyze_takes_predict_and_certify_files_together(tmp_path):
    certify = write(tmp_path, "c.tsv", "idx\tlabel\tradius@1\ttime\n0\t3\t0.5\t0.1\n1\t2\t0.0\t0.1\n")
    predict = write(tmp_path, "p.tsv", COHEN)
    out = io.StringIO()
    results = analyze_files([certify, predict], out=out, err=io.StringIO())
    assert [res.path for res in results] == [certify]
    text = out.getvalue()
    assert text.index("predictions of the smoothed classifier") < text.index("certified top-k accuracy")
    assert "50.0% (1 of 2)" in text


def test_analyze_refuses_radius_options_for_predict_output_only(tmp_path):
    path = write(tmp_path, "p.tsv", TOP2)
    with pytest.raises(CliError, match="--radii applies to certify output"):
        analyze_files([path], radii=[0.5], out=io.StringIO(), err=io.StringIO())
    with pytest.raises(CliError, match="--plot applies to certify output"):
        analyze_files([path], plot=str(tmp_path / "x.png"), out=io.StringIO(), err=io.StringIO())
    assert not (tmp_path / "x.png").exists()


def test_the_command_line_on_a_predict_out(tmp_path):
    good = write(tmp_path, "p.tsv", TOP2 + "120\t4\t4")
    done = subprocess.run(
        [sys.executable, "-m", "topk_certify", "analyze", good], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "abstained: 33.3% (2 of 6)" in done.stdout
    assert done.stderr.startswith("topk-certify: warning:") and "line 8" in done.stderr
    bad = write(tmp_path, "bad.tsv", "idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t2\t1\t0.1\n")
    done = subprocess.run(
        [sys.executable, "-m", "topk_certify", "analyze", bad], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "correct is 1, but label 1 is not in the set 2" in done.stderr
