"""`topk-certify predict`: the smoothed classifier's top-k set of every example, or an
abstention, one TSV row per example (`idx label predict correct time`, as Cohen et al.'s
predict.py writes it). The flags, the checks, the files and torchrun are certify's
(`certify.add_run_flags`, `certify.run_command`); only the job's rows differ."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, List

import numpy as np

from ..settings import CertifySettings
from .certify import add_run_flags, build_settings, run_command
from .errors import CliError

if TYPE_CHECKING:
    from .job import Job

NAME = "predict"
HELP = "the smoothed classifier's top-k set of each example, or an abstention (resumable; torchrun)"
DESCRIPTION = (
    "Cohen et al.'s PREDICT for any k: the top-k labels of n noisy forward passes per example when a "
    "test at level --alpha tells them apart from every other label (for each example, a wrong set with "
    "probability at most alpha), else an abstention. One TSV row per example, written as it finishes: "
    "idx, label, predict (the set as comma-separated labels, largest count first, or -1 for an "
    "abstention), correct (1 when the true label is in the set), time. Writes no counts file (certify "
    "--counts writes them; there is no --counts here). Resumable, and runs under torchrun, as certify."
)
KIND = "predict"  # the job's kind, in the meta and on the progress bar


def add_arguments(p) -> None:
    add_run_flags(p, _predict_flags)


def _predict_flags(p) -> None:
    p.add_argument("--k", type=int, required=True, metavar="K", help="the size of the predicted set (one k)")


def settings_from(args: argparse.Namespace) -> CertifySettings:
    return build_settings(args, k=args.k)


def predict_job(settings: CertifySettings) -> Job:
    """The predict command's job: `predict_batch` on each group, its rows through
    formats.predictions.row_cells."""
    from ..formats.predictions import COLUMNS, row_cells
    from ..smoothing.predict import predict_batch
    from .job import Job, Row

    def sample(model, x, labels, rounds: CertifySettings, device, indices):
        result = predict_batch(
            model,
            x,
            k=rounds.ks[0],
            sigma=rounds.sigma,
            n=rounds.n,
            alpha=rounds.alpha,
            batch_size=rounds.batch_size,
            seed=rounds.seed,
            device=device,
            indices=indices,
            optimize=rounds.optimize,
            precision=rounds.precision,
            compile=rounds.compile,
        )
        if rounds.num_classes is not None and result.num_classes != rounds.num_classes:
            raise CliError(
                f"the model returned {result.num_classes} classes on a batch, but {rounds.num_classes} on the probe: "
                "every batch's output must be as wide"
            )
        return result

    def rows(result, group: List[int], labels: np.ndarray, seconds: float) -> List[Row]:
        return [(row_cells(i, int(labels[j]), result.labels[j], seconds), "") for j, i in enumerate(group)]

    return Job(KIND, COLUMNS, sample, rows)


def run(args: argparse.Namespace) -> None:
    run_command(args, NAME, settings_from, predict_job)
