"""The package's shape, checked from its source: imports go one way (no cycle, function-level
imports included), only the torch front imports torch, `import topk_certify` works without
torch, and functions stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "topk_certify"
# Where torch may be imported: the torch front and the torch-facing loaders.
TORCH_FRONT = ("smoothing", "models", "datasets", "distributed", "digits")
# Public functions whose signatures keep their keywords (and the settings that mirror them).
PUBLIC_SIGNATURES = {"certify_batch", "sample_counts", "predict_batch", "build", "run_benchmark"}
MAX_LINES = 80
MAX_PARAMETERS = 10


def _modules() -> Dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> Iterator[Tuple[str, int]]:
    """(absolute module name, line) of every import in the module, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _ in _imports(name, path):
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                prefix = ".".join(parts[:end])
                # An ancestor package is initialised before the module itself runs.
                if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                    graph[name].add(prefix)
    return graph


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_the_package_has_no_import_cycle():
    graph = _graph()
    assert len(graph) > 20 and "topk_certify.cli.main" in graph
    assert _cycle(graph) == []


def test_the_cycle_check_finds_a_cycle():
    graph = _graph()
    graph["topk_certify.stats"].add("topk_certify.cli.main")  # stats -> cli -> ... -> stats
    assert _cycle(graph)


def test_layers_import_downwards():
    graph = _graph()
    below_cli = [name for name in graph if not name.startswith(("topk_certify.cli", "topk_certify.__main__"))]
    for name in below_cli:
        assert not any(t.startswith("topk_certify.cli") for t in graph[name]), name
    for name in ("topk_certify._checks", "topk_certify.stats", "topk_certify.result", "topk_certify.formats.table"):
        assert not any(t.startswith(("topk_certify.smoothing", "topk_certify.cli")) for t in graph[name]), name


def test_only_the_torch_front_imports_torch():
    offenders = []
    for name, path in _modules().items():
        inner = name.split(".")[1] if "." in name else ""
        for target, line in _imports(name, path):
            if target.split(".")[0] == "torch" and inner not in TORCH_FRONT:
                offenders.append(f"{path.relative_to(PACKAGE)}:{line}")
    assert offenders == []


def test_import_works_with_torch_blocked(tmp_path):
    counts = tmp_path / "c.txt"
    counts.write_text("90 5 5 0\n10 80 10 1\n")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import topk_certify, topk_certify.cli\n"
        "r = topk_certify.certify_counts([[90, 5, 5]], [0], k=1, sigma=0.5)\n"
        "assert r[0] > 0, r\n"
        f"sys.exit(topk_certify.cli.main(['radius', {str(counts)!r}, '--k', '1', '--sigma', '0.5']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("idx\tlabel\tradius\n0\t0\t")
    blocked = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['torch'] = None\nimport topk_certify\n"
            "topk_certify.certify_batch(lambda x: x, [[0.0]], sigma=1.0)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert blocked.returncode != 0 and "pip install 'topk-certify[torch]'" in blocked.stderr


def _functions() -> Iterator[Tuple[str, ast.FunctionDef]]:
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}", node


def _body_lines(node: ast.FunctionDef) -> int:
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1  # the docstring aside
    return lines


@pytest.mark.parametrize("limit", [MAX_LINES])
def test_functions_fit_on_a_screen(limit):
    long = [f"{where} ({_body_lines(node)} lines)" for where, node in _functions() if _body_lines(node) > limit]
    assert long == []


def test_internal_functions_take_at_most_ten_parameters():
    many = []
    for where, node in _functions():
        args = node.args
        count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
        count -= bool(args.args) and args.args[0].arg in ("self", "cls")
        if count > MAX_PARAMETERS and node.name not in PUBLIC_SIGNATURES:
            many.append(f"{where} ({count} parameters)")
    assert many == []
