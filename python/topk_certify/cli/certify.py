"""The sampling commands of the command line: certify (here), analyze and demo."""

from __future__ import annotations

import argparse

from .cli import CliError


def register(sub: "argparse._SubParsersAction") -> None:
    _register_certify(sub)
    from . import analyze, demo

    analyze.register(sub)
    demo.register(sub)


def _register_certify(sub) -> None:
    p = sub.add_parser(
        "certify",
        help="certify a model on a data set (resumable; torchrun for several GPUs/machines)",
        description="Certified top-k radius of every example's true label, one TSV row per example "
        "written as it finishes: idx, label, radius@K for each K, [n,] time. "
        "Run under `torchrun --nproc-per-node N -m topk_certify certify ...` to share the work.",
    )
    p.add_argument("--model", required=True, metavar="SPEC",
                   help="path/to/file.py:NAME, package.module:NAME (an nn.Module or a no-argument callable returning one), or a TorchScript .pt/.ts file")
    p.add_argument("--data", required=True, metavar="FILE", help=".npz with arrays x (E, ...) and y (E,), or a .pt dict of tensors x and y")
    p.add_argument("--sigma", type=float, required=True, help="Gaussian noise level")
    p.add_argument("--k", type=int, nargs="+", required=True, metavar="K", help="one or more k (one radius@K column each)")
    # --num-samples: under torchrun, whose own parser takes `--n` for an ambiguous abbreviation.
    p.add_argument("--n", "--num-samples", dest="n", type=int, default=100_000,
                   help="noise samples per example (the most, with --adaptive; default 100000); spell it --num-samples under torchrun")
    p.add_argument("--n0", type=int, default=100, help="selection samples (prediction mode only; unused here; default 100)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default 0.001)")
    p.add_argument("--batch-size", type=int, default=1000, help="rows per forward pass (default 1000)")
    p.add_argument("--bound", default="simuem", choices=["simuem", "binocp"], help="probability bounds (default simuem)")
    p.add_argument("--seed", type=int, default=None, help="makes the noise, and so the results, reproducible")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto; under torchrun each rank uses cuda:LOCAL_RANK)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.tsv", help="output table (refused if it exists, unless --resume)")
    p.add_argument("--counts", metavar="COUNTS.txt", help="also write the counts in the paper's frequency format")
    p.add_argument("--resume", action="store_true", help="continue a run that was stopped: keep its rows, append the rest")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar (default on)")
    p.add_argument("--adaptive", action="store_true", help="stop sampling an example once more samples cannot change its outcome at --radii")
    p.add_argument("--radii", type=float, nargs="+", metavar="R", help="radii the adaptive run must decide (default: multiples of 0.25)")
    p.set_defaults(handler=run_certify_command)


def run_certify_command(args: argparse.Namespace) -> None:
    try:
        import torch
    except ImportError:
        raise CliError("certify needs PyTorch: pip install 'topk-certify[torch]'") from None
    from . import distributed
    from .job import run_certify
    from .loading import load_data, load_model, resolve_device

    if args.radii is not None and not args.adaptive:
        raise CliError("--radii only applies with --adaptive")
    ctx = distributed.context()
    try:
        if ctx.world_size > 1 and args.device in ("auto", "cuda"):
            device = ctx.device
        else:
            device = resolve_device(torch, args.device)
        x, y = load_data(args.data)
        model = load_model(args.model, device)
        run_certify(
            model, x, y, out=args.output, ks=args.k, sigma=args.sigma, n=args.n, n0=args.n0,
            alpha=args.alpha, batch_size=args.batch_size, bound=args.bound, seed=args.seed,
            device=device, counts=args.counts, resume=args.resume, progress=args.progress,
            adaptive=args.adaptive, radii=args.radii,
            describe={"model": args.model, "data": args.data},
        )
    finally:
        distributed.shutdown()
