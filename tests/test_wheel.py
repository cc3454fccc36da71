"""The release wheel: `make wheel` builds a manylinux abi3 wheel that works on its own.

One build per run: `make wheel` rebuilds only when a source is newer than the wheel in
dist/. The wheel goes into a fresh venv that has numpy (from pip's cache or PyPI) and
nothing else, torch in particular, and its `topk-certify radius` must give the radii that
`certify_counts` gives in this process. Skipped where the toolchain (make, cargo) is missing
or the platform is not Linux x86_64, the one the Makefile's tag is checked for.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import topk_certify

REPO_ROOT = Path(__file__).resolve().parent.parent
DIST = REPO_ROOT / "dist"
# PEP 600 tags, and the legacy aliases maturin may add next to them (manylinux2014 = 2_17).
PLATFORM_TAG = re.compile(r"^manylinux_(\d+)_(\d+)_x86_64$")
LEGACY_TAGS = {"manylinux2014_x86_64": (2, 17), "manylinux2010_x86_64": (2, 12), "manylinux1_x86_64": (2, 5)}


def _cargo() -> str | None:
    found = shutil.which("cargo")
    if found is None and (Path.home() / ".cargo" / "bin" / "cargo").is_file():
        found = str(Path.home() / ".cargo" / "bin" / "cargo")
    return found


def _skip_reason() -> str | None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"the wheel's tag is checked for Linux x86_64, this is {sys.platform} {platform.machine()}"
    if not (REPO_ROOT / "Cargo.toml").is_file() or not (REPO_ROOT / "Makefile").is_file():
        return "not run from a source checkout (no Cargo.toml / Makefile)"
    if shutil.which("make") is None:
        return "make is not installed"
    if _cargo() is None:
        return "no Rust toolchain (cargo) to build the wheel with"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def _version() -> str:
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version = "([^"]+)"', text, re.M)
    assert match, "pyproject.toml has no version"
    return match.group(1)


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def wheel_path() -> Path:
    env = dict(os.environ)
    cargo = _cargo()
    env["PATH"] = f"{Path(cargo).parent}{os.pathsep}{env.get('PATH', '')}"
    done = _run(["make", "-s", "-C", str(REPO_ROOT), "wheel"], env=env, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"make wheel failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    prefix = f"topk_certify-{_version()}-"
    wheels = sorted(DIST.glob(prefix + "*.whl"), key=lambda p: p.stat().st_mtime)
    assert wheels, f"make wheel left no {prefix}*.whl in {DIST}"
    return wheels[-1]


@pytest.fixture(scope="module")
def fresh_venv(wheel_path, tmp_path_factory) -> Path:
    """A new venv holding numpy and the wheel only (no torch, no scipy, not this checkout)."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    env = _clean_env()
    numpy_done = _run([str(python), "-m", "pip", "install", "-q", "numpy>=1.21"], env=env, timeout=900)
    if numpy_done.returncode != 0:
        pytest.skip(
            f"numpy could not be installed into the fresh venv (no pip cache or index?): "
            f"{numpy_done.stderr.strip().splitlines()[-1:]}"
        )
    # --no-index: everything else must come from the wheel itself.
    installed = _run([str(python), "-m", "pip", "install", "-q", "--no-index", str(wheel_path)], env=env, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_wheel_is_manylinux_abi3(wheel_path):
    name, version, python_tag, abi_tag, platform_tags = wheel_path.stem.split("-")
    assert (name, version) == ("topk_certify", _version())
    assert python_tag == "cp39" and abi_tag == "abi3", wheel_path.name
    for tag in platform_tags.split("."):
        assert PLATFORM_TAG.match(tag) or tag in LEGACY_TAGS, f"{tag} is not a manylinux x86_64 tag"
    with zipfile.ZipFile(wheel_path) as whl:
        wheel_meta = whl.read(f"topk_certify-{version}.dist-info/WHEEL").decode()
        names = whl.namelist()
    assert "Root-Is-Purelib: false" in wheel_meta
    assert f"Tag: cp39-abi3-{platform_tags.split('.')[0]}" in wheel_meta
    assert [n for n in names if n.startswith("topk_certify/_core") and n.endswith(".so")] == [
        "topk_certify/_core.abi3.so"
    ]


def test_wheel_needs_no_glibc_newer_than_its_tag(wheel_path, tmp_path):
    """What auditwheel checks, read again from the ELF: every GLIBC_x.y the .so needs is at
    most the tag's version (a manylinux_2_28 wheel must load on glibc 2.28)."""
    elffile = pytest.importorskip(
        "elftools.elf.elffile", reason="pyelftools (auditwheel's ELF reader) is not installed"
    )
    with zipfile.ZipFile(wheel_path) as whl:
        so = Path(whl.extract("topk_certify/_core.abi3.so", tmp_path))
    needed = set()
    with open(so, "rb") as handle:
        elf = elffile.ELFFile(handle)
        section = elf.get_section_by_name(".gnu.version_r")
        assert section is not None, "the extension has no version needs at all"
        for _, auxiliaries in section.iter_versions():
            for aux in auxiliaries:
                match = re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", aux.name)
                if match:
                    needed.add((int(match.group(1)), int(match.group(2))))
    assert needed, "no GLIBC symbol versions found"
    tags = wheel_path.stem.split("-")[4].split(".")
    glibc = max(LEGACY_TAGS.get(t) or tuple(int(x) for x in PLATFORM_TAG.match(t).groups()) for t in tags)
    assert max(needed) <= glibc, f"the .so needs GLIBC_{max(needed)[0]}.{max(needed)[1]} but is tagged {tags}"


def test_fresh_venv_has_no_torch(fresh_venv, tmp_path):
    python = str(fresh_venv / "bin" / "python")
    torch = _run([python, "-c", "import torch"], env=_clean_env(), cwd=tmp_path, timeout=120)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr, torch.stderr
    where = _run(
        [python, "-c", "import topk_certify; print(topk_certify.__file__)"], env=_clean_env(), cwd=tmp_path, timeout=120
    )
    assert where.returncode == 0, where.stderr
    # The wheel's copy, not this checkout's.
    assert Path(where.stdout.strip()).resolve().is_relative_to(fresh_venv.resolve()), where.stdout


def test_cli_radius_from_wheel_matches_certify_counts(fresh_venv, tmp_path):
    rng = np.random.default_rng(7)
    n = 10_000
    probs = rng.dirichlet(np.full(10, 0.3), size=12)
    probs[:6, 3] += 3.0  # half the rows with a clear winner, so some radii are large
    probs /= probs.sum(axis=1, keepdims=True)
    counts = rng.multinomial(n, probs)
    labels = np.argmax(counts, axis=1)
    labels[::4] = (labels[::4] + 1) % 10  # and some labels that are not the top one
    path = tmp_path / "counts.txt"
    path.write_text("".join(" ".join(map(str, row)) + f" {label}\n" for row, label in zip(counts, labels)))

    cli = str(fresh_venv / "bin" / "topk-certify")
    done = _run(
        [cli, "radius", str(path), "--k", "1", "3", "--sigma", "0.25"], env=_clean_env(), cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split("\t") == ["idx", "label", "radius@1", "radius@3"]
    table = np.array([[float(v) for v in line.split("\t")] for line in lines[1:]])
    assert table.shape == (len(labels), 4)
    np.testing.assert_array_equal(table[:, 0], np.arange(len(labels)))
    np.testing.assert_array_equal(table[:, 1], labels)

    expected = np.asarray(topk_certify.certify_counts(counts, labels, k=[1, 3], sigma=0.25, alpha=0.001))
    assert (expected > 0).any() and (expected == 0).any(), "the rows should mix certified and not"
    np.testing.assert_allclose(table[:, 2:], expected, rtol=1e-12, atol=1e-15)
