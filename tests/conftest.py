"""Shared fixtures and Hypothesis profiles for the topk-certify test suite.

Hypothesis profiles: ``default`` (fast, 50 examples) and ``slow`` (500 examples); pick one
with the environment variable HYPOTHESIS_PROFILE=slow.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:  # tests/reference_solver.py
    sys.path.insert(0, str(TESTS_DIR))

settings.register_profile(
    "default",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "slow",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# ----------------------------------------------------------------------------------------
# The published reference data (Jia et al.'s counts and radii)
# ----------------------------------------------------------------------------------------

COUNTS_NAME = "cifar0.25.txt"
RESULT_NAME = "result_k3_sigma0.25_alpha0.001.txt"


def _reference_dir_candidates():
    env = os.environ.get("TOPK_CERTIFY_REFERENCE_DIR")
    if env:
        yield Path(env)
    yield TESTS_DIR / "data"
    yield REPO_ROOT / "reference"
    yield REPO_ROOT / "data" / "reference"
    yield REPO_ROOT.parent / "shared" / "reference"


def find_reference_dir() -> Path | None:
    for d in _reference_dir_candidates():
        if (d / COUNTS_NAME).is_file() and (d / RESULT_NAME).is_file():
            return d
    return None


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    d = find_reference_dir()
    if d is None:
        pytest.fail(
            f"reference data ({COUNTS_NAME}, {RESULT_NAME}) not found; put them in "
            f"tests/data/ or point TOPK_CERTIFY_REFERENCE_DIR at their folder",
            pytrace=False,
        )
    return d


def load_counts_file(path: Path):
    """Rows of (counts list, label) from a `counts... label` whitespace file."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        vals = [int(v) for v in line.split()]
        rows.append((vals[:-1], vals[-1]))
    return rows


@pytest.fixture(scope="session")
def cifar_rows(reference_dir):
    return load_counts_file(reference_dir / COUNTS_NAME)


@pytest.fixture(scope="session")
def published_radii(reference_dir):
    lines = (reference_dir / RESULT_NAME).read_text().splitlines()
    assert lines[0].split() == ["idx", "radius"], lines[0]
    out = []
    for line in lines[1:]:
        if not line.strip():
            continue
        idx, text = line.split("\t")
        out.append((int(idx), text))
    return out


# ----------------------------------------------------------------------------------------
# Helper: a clean Python exception (ValueError / TypeError), never a pyo3 PanicException
# ----------------------------------------------------------------------------------------


class CleanError:
    """Context manager: the block must raise one of `types` whose message matches `match`.

    Catches BaseException so that a pyo3 PanicException (a BaseException subclass) is
    reported as a failure with its message instead of aborting the test run.
    """

    def __init__(self, types=(ValueError,), match: str | None = None):
        import re

        self.types = types if isinstance(types, tuple) else (types,)
        self.pattern = re.compile(match) if match else None
        self.value: BaseException | None = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        __tracebackhide__ = True
        if exc is None:
            pytest.fail(f"expected {self._names()}, nothing was raised")
        self.value = exc
        name = type(exc).__name__
        if "Panic" in name or not isinstance(exc, Exception):
            pytest.fail(f"got {name} (a panic / BaseException), expected {self._names()}: {exc}")
        if not isinstance(exc, self.types):
            pytest.fail(f"got {name}: {exc!s}; expected {self._names()}")
        if self.pattern is not None and not self.pattern.search(str(exc)):
            pytest.fail(f"{name} message {str(exc)!r} does not match {self.pattern.pattern!r}")
        return True  # swallow the expected exception

    def _names(self):
        return " or ".join(t.__name__ for t in self.types)


@pytest.fixture
def clean_error():
    return CleanError
