"""`topk-certify analyze`: certified top-k accuracy against the radius, from certify's
OUT files, and accuracy and abstention rate from predict's (the numbers and plot are
`analysis`'s, the reading `formats.table`'s and `formats.predictions`'s)."""

from __future__ import annotations

import argparse
import math
import sys
from typing import List, Optional, Sequence, Union

import numpy as np

from ..analysis import (
    clean_radii,
    default_radii,
    format_envelope_report,
    format_file_report,
    format_predictions_report,
    plot_curves,
)
from ..formats.errors import FormatError
from ..formats.predictions import Predictions, is_predictions, load_predictions
from ..formats.table import Results, load_results
from .errors import CliError


def _radius_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a radius (a number >= 0), got {text!r} (put the OUT files before --radii)"
        ) from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"a radius must be a finite number >= 0, got {text!r}")
    return value


NAME = "analyze"
HELP = "certified top-k accuracy against the radius, from certify output"
DESCRIPTION = (
    "Certified top-k accuracy (the share of examples whose radius@K is strictly "
    "above r; radius 0 = not certified) at each radius r, for every radius@K column of "
    "certify's OUT.tsv, as an aligned table in percent. With several files over the same "
    "examples (e.g. one per sigma): a block per k with a column per file and the best "
    "(the paper's envelope). Files with an n column (adaptive runs) also get the samples spent. "
    "A predict OUT (idx label predict correct time) gets its accuracy (true label in the "
    "predicted set, an abstention counting as wrong), its abstention rate and its accuracy "
    "when answering."
)


def add_arguments(parser) -> None:
    parser.add_argument("files", nargs="+", metavar="OUT.tsv", help="certify or predict output file(s)")
    parser.add_argument(
        "--radii",
        type=_radius_arg,
        nargs="+",
        metavar="R",
        help="radii to report (default 0, 0.25, 0.5, ... up to the largest radius in the files)",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw certified accuracy against the radius, one curve per k (needs matplotlib)",
    )


def analyze_files(
    paths: Sequence[str],
    radii: Optional[Sequence[float]] = None,
    plot: Optional[str] = None,
    *,
    n_max: Optional[int] = None,
    out=None,
    err=None,
) -> List[Results]:
    """What the command does: read, print the report to `out`, notes to `err`, draw `plot`.

    Predict OUT files (told apart by their header) get their own report each, before the
    certify files'. Raises CliError for user errors. Returns the parsed certify files.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    parsed = [_read(path) for path in paths]
    for res in parsed:
        for note in res.notes:
            err.write(f"topk-certify: warning: {note}\n")
    predictions = [res for res in parsed if isinstance(res, Predictions)]
    results = [res for res in parsed if isinstance(res, Results)]
    blocks = [format_predictions_report(pred) for pred in predictions]
    if results:
        blocks.append(_certify_report(results, radii, plot, n_max))
    else:
        for option, value in (("--radii", radii), ("--plot", plot)):
            if value is not None:
                raise CliError(f"{option} applies to certify output, and {paths[0]} is predict output")
    out.write("\n\n".join(blocks) + "\n")
    out.flush()
    return results


def _read(path: str) -> Union[Results, Predictions]:
    """A certify or predict OUT, told apart by its header; CliError for what cannot be read."""
    try:
        return load_predictions(path) if is_predictions(path) else load_results(path)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"cannot read {path}: not a text file") from None
    except FormatError as exc:
        raise CliError(str(exc)) from None


def _certify_report(results: List[Results], radii: Optional[Sequence[float]], plot: Optional[str], n_max) -> str:
    """The certify files' report (drawing `plot` first: a failure leaves one error line)."""
    if radii is None:
        rs = default_radii(max(float(res.radius.max()) for res in results))
    else:
        try:
            rs = np.asarray(clean_radii(radii))
        except ValueError as exc:
            raise CliError(str(exc)) from None
    if len(results) == 1:
        report = format_file_report(results[0], rs, n_max)
    else:
        try:
            report = format_envelope_report(results, rs, n_max)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    if plot is not None:  # before printing: a failure leaves one error line, no half output
        try:
            plot_curves(results, plot)
        except ImportError as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            raise CliError(f"cannot write {plot}: {exc.strerror or exc}") from None
        except ValueError as exc:  # e.g. an extension matplotlib cannot write
            raise CliError(f"cannot write {plot}: {exc}") from None
        report += f"\nplot: {plot}"
    return report


def run(args: argparse.Namespace) -> None:
    analyze_files(args.files, args.radii, args.plot)
