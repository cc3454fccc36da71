"""`topk-certify certify`: certify a model on a data set, one TSV row per example (the job
is `job.run_job` with `job.certify_job`; this module turns the flags into its settings). Its
flags (`add_run_flags`) and its run (`run_command`) are shared with `predict`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Callable

from .. import distributed
from ..settings import CertifySettings
from .errors import CliError

if TYPE_CHECKING:
    from .job import Job

NAME = "certify"
HELP = "certify a model on a data set (resumable; torchrun for several GPUs/machines)"
DESCRIPTION = (
    "Certified top-k radius of every example's true label, one TSV row per example "
    "written as it finishes: idx, label, radius@K for each K, [n,] time. "
    "Run under `torchrun --nproc-per-node N -m topk_certify certify ...` to share the work."
)


def add_arguments(p) -> None:
    add_run_flags(p, _certify_flags)


def _certify_flags(p) -> None:
    p.add_argument(
        "--k", type=int, nargs="+", required=True, metavar="K", help="one or more k (one radius@K column each)"
    )
    p.add_argument(
        "--n0", type=int, default=100, help="selection samples (prediction mode only; unused here; default 100)"
    )
    p.add_argument(
        "--bound", default="simuem", choices=["simuem", "binocp"], help="probability bounds (default simuem)"
    )
    p.add_argument(
        "--adaptive",
        action="store_true",
        help="stop sampling an example once more samples cannot change its outcome at --radii",
    )
    p.add_argument(
        "--radii",
        type=float,
        nargs="+",
        metavar="R",
        help="radii the adaptive run must decide (default: multiples of 0.25)",
    )
    p.add_argument("--counts", metavar="COUNTS.txt", help="also write the counts in the paper's frequency format")


def add_run_flags(p, own_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """The flags of every command that runs a model over a data set (certify, predict): what
    to run on, the noise, the command's `own_flags` (--k and the like), how the model runs,
    and the run's files."""
    _what_flags(p)
    _noise_flags(p)
    own_flags(p)
    _inference_flags(p)
    _file_flags(p)


def _what_flags(p) -> None:
    p.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="path/to/file.py:NAME, package.module:NAME (an nn.Module or a no-argument callable returning one), "
        "a TorchScript file, or a Cohen-format checkpoint (.pth/.pth.tar with arch and state_dict)",
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="SPEC",
        help="cifar10:ROOT (the CIFAR-10 test split in torchvision's folder), imagenet:DIR (an ImageFolder "
        "of the validation set), an .npz with arrays x (E, ...) and y (E,), or a .pt dict of tensors x and y",
    )
    p.add_argument(
        "--skip",
        type=int,
        default=1,
        metavar="N",
        help="run every N-th example (idx 0, N, 2N, ...; default 1), as Cohen et al.'s certify.py",
    )
    p.add_argument(
        "--max",
        type=int,
        default=-1,
        metavar="M",
        help="stop at idx M (examples with idx < M; default -1: all), as Cohen et al.'s certify.py",
    )


def _noise_flags(p) -> None:
    p.add_argument("--sigma", type=float, required=True, help="Gaussian noise level")
    # --num-samples: under torchrun, whose own parser takes `--n` for an ambiguous abbreviation.
    p.add_argument(
        "--n",
        "--num-samples",
        dest="n",
        type=int,
        default=100_000,
        help="noise samples per example (default 100000; the most, with certify --adaptive); "
        "spell it --num-samples under torchrun",
    )
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default 0.001)")
    p.add_argument("--batch-size", type=int, default=1000, help="rows per forward pass (default 1000)")
    p.add_argument("--seed", type=int, default=None, help="makes the noise, and so the results, reproducible")


def _inference_flags(p) -> None:
    """How the model is run (smoothing/inference.py); the certificate is the model's as run."""
    p.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="run the model exactly as given (default: BatchNorm folded and channels_last, on a copy, "
        "checked against the model on a probe batch first)",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="autocast the model's forward pass (default fp32); the certificate (or prediction) is then the "
        "reduced-precision model's; fp16 is refused on the CPU",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the model (CUDA graphs on CUDA; compiles once per run)"
    )


def _file_flags(p) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda or cuda:N (default auto; under torchrun each rank uses cuda:LOCAL_RANK)",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT.tsv", help="output table (refused if it exists, unless --resume)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue a run that was stopped: keep its rows, append the rest"
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar (default on)")


def settings_from(args: argparse.Namespace) -> CertifySettings:
    """The flags checked into the job's settings (the same object certify_batch builds)."""
    if args.radii is not None and not args.adaptive:
        raise CliError("--radii only applies with --adaptive")
    return build_settings(
        args,
        k=list(args.k),
        n0=args.n0,
        bound=args.bound,
        adaptive=args.adaptive,
        radii=args.radii,
    )


def build_settings(args: argparse.Namespace, **own) -> CertifySettings:
    """The settings of `add_run_flags`' flags and a command's `own` ones, checked: a bad value
    is a CliError naming its flag."""
    try:
        return CertifySettings.build(
            sigma=args.sigma,
            n=args.n,
            alpha=args.alpha,
            batch_size=args.batch_size,
            seed=args.seed,
            optimize=args.optimize,
            precision=args.precision,
            compile=args.compile,
            **own,
        )
    except (TypeError, ValueError) as exc:
        raise CliError(_flag_names(str(exc))) from None


def selection(skip: int, limit: int, num_examples: int) -> range:
    """idx 0, skip, 2 skip, ... below `limit` (-1: no limit): Cohen et al.'s --skip/--max, where
    idx stays the example's index in the whole data set."""
    if skip < 1:
        raise CliError(f"--skip must be at least 1, got {skip}")
    if limit < -1:
        raise CliError(f"--max must be -1 (all examples) or an idx >= 0, got {limit}")
    end = num_examples if limit == -1 else min(limit, num_examples)
    return range(0, end, skip)


def _flag_names(message: str) -> str:
    """The library's argument names as the command's flags."""
    for name, flag in (("batch_size", "--batch-size"), ("n0", "--n0"), ("n", "--n"), ("seed", "--seed"), ("k", "--k")):
        if message.startswith(name + " "):
            return flag + message[len(name) :]
    return message


def resolve_device(torch, name: str):
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`."""
    from ..smoothing.inputs import parse_device

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return parse_device(torch, name)
    except ValueError as exc:
        if "no CUDA GPU" in str(exc):
            raise CliError(f"--device {name}: no CUDA GPU is available here (use --device cpu or auto)") from None
        raise CliError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None


def _load(args: argparse.Namespace, torch, ctx):
    """(device, data source, model): what the flags name, loaded (on every rank)."""
    from ..datasets import open_data
    from ..models import load_model

    if ctx.world_size > 1 and args.device in ("auto", "cuda"):
        device = ctx.device
    else:
        device = resolve_device(torch, args.device)
    try:
        source = open_data(args.data)
    except (TypeError, ValueError) as exc:
        raise CliError(f"--data {exc}") from None
    try:
        model = load_model(args.model, device)
    except ValueError as exc:
        raise CliError(f"--model {exc}") from None
    return device, source, model


def _check_runnable(settings: CertifySettings, device) -> None:
    """--precision and --compile refused before any file is written where they cannot run."""
    from ..smoothing.inference import check_runnable

    try:
        check_runnable(settings.precision, settings.compile, device)
    except ValueError as exc:
        message = str(exc).replace('precision="fp16"', "--precision fp16").replace("compile=True", "--compile")
        raise CliError(message.replace("compile=False", "no --compile")) from None


def run(args: argparse.Namespace) -> None:
    from .job import certify_job

    run_command(args, NAME, settings_from, lambda settings: certify_job(settings, args.counts))


def run_command(
    args: argparse.Namespace,
    name: str,
    settings_of: Callable[[argparse.Namespace], CertifySettings],
    job_of: Callable[[CertifySettings], Job],
) -> None:
    """Runs a command's job (`job_of(settings)`, settings from `settings_of(args)`) on the
    flags of `add_run_flags`: every check before a file is created, on every rank."""
    from ..smoothing.inputs import import_torch
    from .job import run_job

    try:
        torch = import_torch()
    except ImportError:
        raise CliError(f"{name} needs PyTorch: pip install 'topk-certify[torch]'") from None
    settings = settings_of(args)
    selection(args.skip, args.max, 0)  # the flags checked before anything is loaded
    ctx = distributed.context(args.device)
    failed = True
    try:
        device, source, model = ctx.together(lambda: _load(args, torch, ctx))
        _check_runnable(settings, device)
        describe = {"model": args.model, "data": args.data, "skip": args.skip, "max": args.max}
        run_job(
            model,
            source,
            settings,
            job_of(settings),
            out=args.output,
            device=device,
            resume=args.resume,
            selection=selection(args.skip, args.max, len(source)),
            progress=args.progress,
            describe=describe,
        )
        failed = False
    finally:
        distributed.shutdown(failed=failed)
