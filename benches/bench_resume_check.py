"""What a run's identity costs: the checks `certify --resume` makes before it appends a row,
and what a fresh run adds, against one decoding pass over the same images.

An ImageFolder of N ImageNet-sized JPEGs (500x375, noise) is written to a temporary folder;
then, in one run:
  decode      one pass of source.read over the N images (what certifying them reads anyway)
  headers     check_inputs: every selected file's header opened (a fresh run, before files)
  resume      identity.verify_examples over the N images (read again, digested, compared)
  digests     the digests alone, on images already decoded (what a fresh run adds per round)
  meta        one rewrite of OUT.meta.json as a 50,000-example run has it (once per round)
  resnet50    the model fingerprint of a ResNet-50 (25.6M parameters) as built
Prints seconds and each time as a ratio of the decode pass (decode, headers and resume
alternated --repeat times, the best of each).

    python benches/bench_resume_check.py [--images 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def _write_images(root: str, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(10):
        os.makedirs(os.path.join(root, f"n{c:02d}"))
    for i in range(count):
        pixels = rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(os.path.join(root, f"n{i % 10:02d}", f"{i:05d}.JPEG"), quality=90)


def _timed(work):
    start = time.perf_counter()
    value = work()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="timings alternated, the best of each kept")
    args = parser.parse_args()

    from topk_certify.cli import identity
    from topk_certify.datasets import open_data
    from topk_certify.formats import table

    with tempfile.TemporaryDirectory() as folder:
        root = os.path.join(folder, "val")
        _write_images(root, args.images)
        source = open_data(f"imagenet:{root}")
        selected = list(range(len(source)))
        steps = [selected[i : i + 64] for i in range(0, len(selected), 64)]
        xs = [source.read(step) for step in steps]
        digests, ds = _timed(
            lambda: [d for s, x in zip(steps, xs) for d in identity.example_digests(s, source.labels[s], x)]
        )
        xs.clear()  # only the timings below hold images from here on
        recorded = identity.ExampleLog(ds).as_meta()

        def digests_of(group):
            return identity.example_digests(group, source.labels[group], source.read(group))

        def decode_pass():
            for step in steps:
                source.read(step)

        # Alternated, the best of each: the machine is shared, so single timings wander.
        decode = resume = headers = float("inf")
        for _ in range(args.repeat):
            decode = min(decode, _timed(decode_pass)[0])
            resume = min(
                resume,
                _timed(lambda: identity.verify_examples("out", recorded, len(selected), selected, digests_of))[0],
            )
            headers = min(headers, _timed(lambda: source.check_inputs(selected))[0])
        meta = {"examples": identity.ExampleLog([b"\0" * 16] * 50_000).as_meta(), "sigma": 0.5}
        out = os.path.join(folder, "out.tsv")
        rewrites = 20
        meta_time, _ = _timed(lambda: [table.write_meta(out, meta) for _ in range(rewrites)])
    model_time = _resnet50_fingerprint()
    print(f"{args.images} images, 500x375 JPEG")
    rows = [
        ("decode pass", decode),
        ("headers (fresh run)", headers),
        ("resume check", resume),
        ("digests only", digests),
        ("meta rewrite (one round)", meta_time / rewrites),
        ("resnet50 fingerprint", model_time),
    ]
    for name, seconds in rows:
        print(f"{name:26s} {seconds:9.4f} s   {seconds / decode:7.3f}x the decode pass")


def _resnet50_fingerprint() -> float:
    from topk_certify.models import build_model
    from topk_certify.models.fingerprint import model_fingerprint

    model = build_model("resnet50")
    model_fingerprint(model)  # warm
    seconds, _ = _timed(lambda: model_fingerprint(model))
    return seconds


if __name__ == "__main__":
    main()
