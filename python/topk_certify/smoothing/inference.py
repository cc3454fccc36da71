"""The model as it is run for sampling: its inference form, built once per call (internal).

From the user's module, on a deep copy (the module itself, its parameters, buffers, memory
format, training flags and attributes are never changed):

- eval-mode BatchNorm folded into the convolution or linear layer right before it (torch.fx
  on the copy; a BatchNorm with no such layer stays);
- channels_last for 4-D inputs: the copy's weights, and each batch inside the runner (the
  sampler draws the noise in NCHW exactly as before, so seeded noise does not change);
- on the CPU, a batch run in slices whose largest activation holds about CPU_SLICE_BYTES
  (8 rows at least): glibc's malloc gives blocks as big as a batch's activations (26 MB for
  400 CIFAR images) back to the system when they are freed, so each layer's output is mapped
  and faulted in afresh; a slice's are reused from the heap (1.16x on ResNet-110 at batch
  400, interleaved; nothing in a process that sets MALLOC_MMAP_THRESHOLD_). The slices run
  side by side, each on a worker thread with its share of torch's threads (slice_pool.py):
  narrow convolutions keep several threads busy less well than one pass each. Each row's
  logits are its own whatever rows share its pass, which the probe checks on slices;
- precision="bf16"/"fp16": autocast around the forward pass only, logits returned as float32;
- compile=True: torch.compile (CUDA graphs on CUDA) on one static batch shape: a shorter batch
  is padded up to it and the output sliced, so padded rows are never counted and the last
  batch does not compile again.

What cannot be traced or folded (data-dependent control flow, hooks, TorchScript, a plain
callable), a module with nothing to fold and no 4-D convolution, and a module whose forward
changes its own Python state (a call counter: the traced copy would lose it) run as given.
Before the long loop the runner is checked against the module as given on a probe batch of
noisy inputs drawn from a separate fixed-seed generator (never from the examples' streams):
any label different, or a logit beyond a small relative tolerance, and the module runs as
given, with one warning. The certificate is about the model as run: the optimized form
differs from the module as given only by floating-point rounding, which the probe checks.

Built forms, and the probe's verdict, are reused by later calls on the same module (the
certify job calls once per chunk of examples) while the module is unchanged: same parameters
and buffers (identity, version counter and a checksum of their bits), same submodules and
Python attributes. Any change and the form is built and probed again.
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings
import weakref
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from .slice_pool import SlicePool

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PROBE_ROWS = 32  # noisy inputs in the probe batch (at most batch_size)
PROBE_SEED = 0x5EED_0F_C0DE  # the probe's own generator: the examples' streams are never touched
# Largest |difference| of a logit, relative to the row's largest |logit|, that the probe
# accepts: folding and layouts move fp32 logits by ~1e-6 relative; bf16/fp16 round to 3 digits.
PROBE_RTOL = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 1e-2}
CPU_SLICE_BYTES = 4 << 20  # the largest activation of one slice on the CPU
# Fewest rows of a CPU slice: every slice reads all the weights again (ResNet-50's are 100 MB)
CPU_SLICE_MIN_ROWS = 8

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# (layer, the BatchNorm that may follow it, dimensions of the layer's output)
_FOLDABLE = {
    (nn.Conv1d, nn.BatchNorm1d): 3,
    (nn.Conv2d, nn.BatchNorm2d): 4,
    (nn.Conv3d, nn.BatchNorm3d): 5,
    (nn.Linear, nn.BatchNorm1d): 2,
}


class OptimizeFallbackWarning(UserWarning):
    """The inference form disagreed with the module as given on the probe batch: the module
    runs as given."""


class Runner:
    """What the sampler calls as its model: `core(batch)` in channels_last when asked, under
    autocast when asked, padded to a static batch when compiled; logits as float32 under
    reduced precision."""

    def __init__(self, core: Callable, model: Any, *, channels_last: bool, precision: str, device: torch.device):
        self.core = core
        self._model = weakref.ref(model) if isinstance(model, nn.Module) else (lambda: model)
        self.channels_last = channels_last
        self.precision = precision
        self.device = device
        self.static: Optional[torch.Tensor] = None  # compiled: the one batch shape it runs
        self.cuda_graphs = False
        self.eager: Optional[Callable] = None  # compiled: the same form uncompiled
        self.out_of_memory = False  # a padded batch ran out of memory: shorter ones run eager
        self.slice_rows: Optional[int] = None  # rows per pass on the CPU (None: the whole batch)
        self.pool: Optional[SlicePool] = None  # runs a batch's slices side by side

    def parameters(self):
        """The user's module's parameters (the sampler names their dtype when a batch fails)."""
        model = self._model()
        return model.parameters() if isinstance(model, nn.Module) else iter(())

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        rows = batch.shape[0]
        if self.static is not None and rows < self.static.shape[0] and self.out_of_memory:
            # The sampler retries in halves after an out-of-memory error: padding them back
            # up to the static shape would fail the same way, so they run uncompiled.
            return self._run(self.eager, self._layout(batch), rows)
        if self.static is not None:
            if rows > self.static.shape[0]:  # never expected: the sampler's batches are at most batch_size
                self.static = torch.empty_like(batch, memory_format=self._format())
            self.static[:rows].copy_(batch)  # a shorter batch: the rest is padding, sliced off below
            batch = self.static
        elif self.slice_rows is not None and (size := self._slice_size(rows)) < rows:
            return torch.cat(self._run_slices(batch.split(size)))
        else:
            batch = self._layout(batch)
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        try:
            out = self._run(self.core, batch, rows)
        except torch.OutOfMemoryError:
            self.out_of_memory = self.static is not None
            raise
        if self.static is not None and isinstance(out, torch.Tensor) and out.ndim >= 1:
            # the output of a CUDA graph is overwritten by its next replay: keep a copy
            out = out[:rows].clone()
        return out

    def _slice_size(self, rows: int) -> int:
        """Rows per slice: at most slice_rows, and few enough that every worker has one."""
        workers = 1 if self.pool is None else self.pool.workers()
        return max(1, min(self.slice_rows or rows, -(-rows // workers)))

    def _run_slices(self, parts: Tuple[torch.Tensor, ...]) -> List[Any]:
        def run(part: torch.Tensor) -> Any:
            return self._run(self.core, self._layout(part), part.shape[0])

        return [run(part) for part in parts] if self.pool is None else self.pool.map(run, parts)

    def _layout(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch

    def _run(self, core: Any, batch: torch.Tensor, rows: int) -> Any:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return core(batch)
        with torch.autocast(self.device.type, dtype=dtype):
            out = core(batch)
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out

    def _format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


# -- refusals ---------------------------------------------------------------------------------


def check_runnable(precision: str, compile: bool, device: torch.device) -> None:
    """Refuses, before any work, what cannot run on `device` (a ValueError that says why)."""
    dtype = PRECISIONS[precision]
    if dtype is not None:
        if device.type == "cpu" and dtype == torch.float16:
            raise ValueError(
                'precision="fp16" is not supported on the CPU (its float16 kernels are slow or missing); '
                'use precision="bf16" or "fp32" there'
            )
        if not torch.amp.is_autocast_available(device.type):
            raise ValueError(f"precision={precision!r} needs autocast, which is not available on {device.type}")
        if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ValueError('precision="bf16" is not supported by this GPU; use precision="fp16"')
    if compile:
        problem = compile_problem(device)
        if problem is not None:
            raise ValueError(f"compile=True cannot run here: {problem}; leave compile=False")


def compile_problem(device: torch.device) -> Optional[str]:
    """Why torch.compile cannot run on `device` here, or None."""
    from torch._dynamo import eval_frame

    if not eval_frame.is_dynamo_supported():
        return "torch.compile does not support this Python or platform"
    if device.type == "cpu":
        compilers = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
        if not any(name and shutil.which(name) for name in compilers):
            return "torch.compile needs a C++ compiler for the CPU (g++ or clang++ on PATH, or CXX)"
        return None
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "torch.compile needs Triton for CUDA (pip install triton)"
    return f"torch.compile runs on the CPU and CUDA, not on {device.type}"


# -- the inference form -----------------------------------------------------------------------


def _has_hooks(model: nn.Module) -> bool:
    from torch.nn.modules import module as module_globals

    global_hooks = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")
    if any(getattr(module_globals, name, None) for name in global_hooks):
        return True
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return any(getattr(m, name, None) for m in model.modules() for name in names)


def _worth_optimizing(model: nn.Module, x: torch.Tensor) -> bool:
    """Something to fold (a BatchNorm with running statistics and a layer it could follow),
    or a 4-D convolution to run in channels_last."""
    modules = list(model.modules())
    norms = any(type(m) in _BATCHNORMS and m.running_mean is not None for m in modules)
    layers = any(type(m) in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear) for m in modules)
    conv2d = x.ndim == 4 and any(type(m) is nn.Conv2d for m in modules)
    return (norms and layers) or conv2d


def _python_state(model: nn.Module) -> List[Tuple[Any, ...]]:
    """Every submodule's attributes (and the items of its dicts, lists and sets), by identity:
    a forward that sets or mutates one shows up as a difference."""
    state: List[Tuple[Any, ...]] = []
    for module in model.modules():
        for key, value in vars(module).items():
            if isinstance(value, dict):
                items: Any = tuple(value.items())
            elif isinstance(value, (list, set)):
                items = tuple(value)
            else:
                items = ()
            state.append((module, key, value, items))
    return state


def _same_state(before: List[Tuple[Any, ...]], after: List[Tuple[Any, ...]]) -> bool:
    def same_items(a: tuple, b: tuple) -> bool:
        return len(a) == len(b) and all(u is v or (isinstance(u, tuple) and _same_pair(u, v)) for u, v in zip(a, b))

    return len(before) == len(after) and all(
        m is n and k == j and v is w and same_items(a, b) for (m, k, v, a), (n, j, w, b) in zip(before, after)
    )


def _same_pair(u: tuple, v: Any) -> bool:
    return isinstance(v, tuple) and len(u) == len(v) == 2 and u[0] == v[0] and u[1] is v[1]


def inference_form(model: Any, x: torch.Tensor) -> Optional[nn.Module]:
    """The folded, channels_last copy of `model`, or None when it runs as given."""
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return None
    if _has_hooks(model) or not _worth_optimizing(model, x):
        return None
    try:
        with torch.no_grad():
            twin = copy.deepcopy(model)
        twin.eval()
        before = _python_state(twin)
        traced = torch.fx.symbolic_trace(twin)
    except Exception:  # data-dependent control flow, an uncopyable attribute, ...: run as given
        return None
    if not _same_state(before, _python_state(twin)):
        return None  # its forward changes its own state, which the traced copy would lose
    try:
        with torch.no_grad():
            folded = fold_batchnorms(traced, x[:1])
    except Exception:
        return None
    conv2d = x.ndim == 4 and any(type(m) is nn.Conv2d for m in traced.modules())
    if not folded and not conv2d:
        return None
    if conv2d:
        traced = traced.to(memory_format=torch.channels_last)
    return traced


def fold_batchnorms(graph: torch.fx.GraphModule, example: torch.Tensor) -> int:
    """Folds every eval-mode BatchNorm into the convolution or linear layer whose output only
    it reads (that layer called once in the graph); returns how many were folded."""
    from torch.fx.passes.shape_prop import ShapeProp
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    ShapeProp(graph).propagate(example)
    modules = dict(graph.named_modules())
    calls: Dict[str, int] = {}
    for node in graph.graph.nodes:
        if node.op in ("call_module", "get_attr"):
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in list(graph.graph.nodes):
        layer_node = _foldable_input(node, modules, calls)
        if layer_node is None:
            continue
        layer, norm = modules[layer_node.target], modules[node.target]
        fuse = fuse_linear_bn_eval if isinstance(layer, nn.Linear) else fuse_conv_bn_eval
        owner, _, name = layer_node.target.rpartition(".")
        setattr(graph.get_submodule(owner) if owner else graph, name, fuse(layer, norm))
        node.replace_all_uses_with(layer_node)
        graph.graph.erase_node(node)
        folded += 1
    if folded:
        graph.graph.lint()
        graph.delete_all_unused_submodules()
        graph.recompile()
    return folded


def _foldable_input(node: Any, modules: Dict[str, nn.Module], calls: Dict[str, int]) -> Any:
    """The layer node a BatchNorm node can be folded into, or None."""
    if node.op != "call_module" or type(modules.get(node.target)) not in _BATCHNORMS:
        return None
    norm = modules[node.target]
    if norm.running_mean is None or norm.running_var is None or len(node.args) != 1 or node.kwargs:
        return None
    source = node.args[0]
    if getattr(source, "op", None) != "call_module" or len(source.users) != 1 or calls.get(source.target) != 1:
        return None
    layer = modules[source.target]
    dims = _FOLDABLE.get((type(layer), type(norm)))
    shape = getattr(source.meta.get("tensor_meta"), "shape", None)
    if dims is None or shape is None or len(shape) != dims or shape[1] != norm.num_features:
        return None
    if any(prefix_used(source.target, target) for target in calls if target != source.target):
        return None  # its weights are read elsewhere in the graph too
    tensors = [*layer.parameters(), *norm.parameters(), norm.running_mean, norm.running_var]
    return source if len({t.dtype for t in tensors}) == 1 else None


def prefix_used(layer: str, target: str) -> bool:
    return target.startswith(layer + ".")


# -- reuse across calls -----------------------------------------------------------------------

_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def _token(value: Any, tensors: List[torch.Tensor], depth: int = 0) -> Any:
    """What identifies an attribute's value: scalars by value, tensors by identity, version,
    storage and (later) a checksum of their bits, containers by their items, other objects by
    type and identity. Holds no reference to the user's objects other than scalars."""
    if isinstance(value, _SCALARS):
        return (type(value), value)
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        version = -1 if value.is_inference() else value._version  # inference tensors have none: the checksum tells
        return ("tensor", id(value), version, value.data_ptr(), tuple(value.shape), value.dtype, value.device)
    if depth < 2 and isinstance(value, dict):
        return (
            "dict",
            id(value),
            tuple((_token(k, tensors, 2), _token(v, tensors, depth + 1)) for k, v in value.items()),
        )
    if depth < 2 and isinstance(value, (list, tuple, set, frozenset)):
        return (type(value), id(value), tuple(_token(v, tensors, depth + 1) for v in value))
    return (type(value), id(value))


def _checksums(tensors: List[torch.Tensor]) -> Tuple[int, ...]:
    """Each tensor's bits summed as integers of their width, wrapping around (catches writes
    through `.data`, which do not move the version counter: any one changed element changes
    the sum). One vectorized pass over the weights: ~10 ms for ResNet-50's on one core."""
    ints = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    sums = []
    with torch.inference_mode():
        for t in tensors:
            flat = t.detach().reshape(-1)
            if flat.numel() == 0:
                continue
            bits = flat.view(ints[flat.element_size()]) if flat.element_size() in ints else flat.view(torch.int8)
            sums.append(bits.sum(dtype=bits.dtype).to(torch.int64))
        return tuple(torch.stack(sums).tolist()) if sums else ()


def fingerprint(model: nn.Module) -> Tuple[Any, ...]:
    """The module's state as far as it can change what its forward computes."""
    tensors: List[torch.Tensor] = []
    state = tuple(
        (type(m), id(m), key, _token(value, tensors)) for m in model.modules() for key, value in vars(m).items()
    )
    return state, _checksums(tensors)


class _Entry(NamedTuple):
    model: Any  # a weak reference
    fingerprint: Tuple[Any, ...]
    runner: Optional[Runner]  # None: the module runs as given


# (id of the module, settings key) -> its form; a few settings per module (a benchmark
# alternates them), the oldest dropped first, and a module's forms go when it does.
_CACHE: Dict[Tuple[int, Tuple[Any, ...]], _Entry] = {}
_CACHE_SIZE = 8


def _cached(model: Any, key: Tuple[Any, ...], print_: Optional[Tuple[Any, ...]]) -> Optional[_Entry]:
    entry = _CACHE.get((id(model), key))
    if entry is None or entry.model() is not model or entry.fingerprint != print_:
        return None
    return entry


def _forget(ident: int) -> None:
    for where in [where for where in _CACHE if where[0] == ident]:
        del _CACHE[where]


def _remember(model: Any, key: Tuple[Any, ...], print_: Optional[Tuple[Any, ...]], runner: Optional[Runner]) -> None:
    if print_ is None:
        return
    ident = id(model)
    _CACHE.pop((ident, key), None)
    while len(_CACHE) >= _CACHE_SIZE:
        del _CACHE[next(iter(_CACHE))]
    _CACHE[(ident, key)] = _Entry(weakref.ref(model, lambda _: _forget(ident)), print_, runner)


def clear_cache() -> None:
    """Forgets every built form (they are rebuilt on the next call)."""
    _CACHE.clear()


# -- the runner of one call -------------------------------------------------------------------


def runner_for(model: Any, x: torch.Tensor, settings: Any) -> Callable:
    """What the sampler runs for this call (x: the call's inputs, on the device).

    optimize=False at fp32 without compile: the model itself, exactly as before. Otherwise a
    Runner: the inference form (or the module as given) at the requested precision, compiled
    when asked, checked on a probe batch against the module as given at that precision.
    """
    from .inputs import eval_mode

    s = settings
    check_runnable(s.precision, s.compile, x.device)
    if not s.optimize and s.precision == "fp32" and not s.compile:
        return model
    as_given = (
        model
        if s.precision == "fp32"
        else Runner(model, model, channels_last=False, precision=s.precision, device=x.device)
    )
    if not s.optimize and not s.compile:
        return as_given
    static_rows = min(s.batch_size, x.shape[0] * (s.n0 + s.n)) if s.compile else None
    key = (s.optimize, s.precision, s.compile, static_rows, x.device, x.dtype, tuple(x.shape[1:]))
    with eval_mode(torch, model), torch.inference_mode(False):
        print_ = fingerprint(model) if isinstance(model, nn.Module) else None
        entry = _cached(model, key, print_)
        if entry is not None:  # built and probed for this very state of the module
            return as_given if entry.runner is None else entry.runner
        runner = _build(model, x, s, static_rows)
        if runner is None:
            _remember(model, key, print_, None)
            return as_given
        with torch.inference_mode():
            rows = min(PROBE_ROWS, s.batch_size if static_rows is None else static_rows)
            problem = probe_sliced(runner, as_given, probe_batch(x, s.sigma, rows), PROBE_RTOL[s.precision])
        if problem is not None:
            warnings.warn(
                f"the optimized form of the model disagrees with the module as given on the probe batch "
                f"({problem}): running the module as given (optimize=False skips this check)",
                OptimizeFallbackWarning,
                stacklevel=3,
            )
            runner = None
    _remember(model, key, print_, runner)
    return as_given if runner is None else runner


def _build(model: Any, x: torch.Tensor, settings: Any, static_rows: Optional[int]) -> Optional[Runner]:
    """A Runner on the inference form (or, for compile only, on the module as given), or
    None when it would be the module as given."""
    form = inference_form(model, x) if settings.optimize else None
    if form is None and not settings.compile:
        return None
    if form is None and not isinstance(model, nn.Module):
        return None  # a plain callable is not compiled
    core: Any = model if form is None else form
    channels_last = form is not None and x.ndim == 4 and any(type(m) is nn.Conv2d for m in form.modules())
    runner = Runner(core, model, channels_last=channels_last, precision=settings.precision, device=x.device)
    if form is not None and x.device.type == "cpu" and not settings.compile:
        runner.slice_rows = slice_rows(form)
        if runner.slice_rows is not None:
            runner.pool = SlicePool()
            weakref.finalize(runner, runner.pool.close)
    if settings.compile and static_rows is not None:
        cuda = x.device.type == "cuda"
        runner.eager = core
        runner.core = torch.compile(core, mode="reduce-overhead" if cuda else None, dynamic=False)
        runner.cuda_graphs = cuda
        shape = (static_rows, *x.shape[1:])
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        runner.static = torch.zeros(shape, dtype=x.dtype, device=x.device).contiguous(memory_format=fmt)
    return runner


def slice_rows(form: torch.fx.GraphModule) -> Optional[int]:
    """Rows per CPU pass whose largest activation fits in CPU_SLICE_BYTES, from the shapes of
    one row recorded when the form was folded; None when they are not known for every node,
    or the output is not one tensor with a row per input (its slices could not be joined)."""
    largest = 0
    for node in form.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if node.op == "output":
            if not _one_row_of_logits(node.args[0]):
                return None
        elif hasattr(meta, "shape"):
            largest = max(largest, meta.shape.numel() * meta.dtype.itemsize)
        elif node.op != "get_attr" and not _sizeless(node.meta.get("type")):
            return None  # tensors in a tuple, or no shape recorded: the size of a row is not known
    return max(CPU_SLICE_MIN_ROWS, CPU_SLICE_BYTES // largest) if largest else None


def _one_row_of_logits(value: Any) -> bool:
    """The form's output, traced on one row, is one tensor with one row."""
    meta = value.meta.get("tensor_meta") if isinstance(value, torch.fx.Node) else None
    shape = getattr(meta, "shape", None)
    return shape is not None and len(shape) >= 1 and shape[0] == 1


def _sizeless(kind: Any) -> bool:
    """A node's value that holds no activation: a size, a number, a string."""
    return isinstance(kind, type) and issubclass(kind, (int, float, bool, str, torch.Size))


def probe_batch(x: torch.Tensor, sigma: float, rows: int) -> torch.Tensor:
    """`rows` noisy inputs (the examples in turn) from the probe's own fixed-seed generator."""
    generator = torch.Generator(device=x.device)
    generator.manual_seed(PROBE_SEED)
    examples = x[torch.arange(rows, device=x.device) % x.shape[0]]
    noise = torch.empty_like(examples).normal_(0.0, sigma, generator=generator)
    return examples + noise


def probe_sliced(runner: Runner, as_given: Callable, batch: torch.Tensor, rtol: float) -> Optional[str]:
    """probe(), with a runner that slices its batches cutting the probe batch in two at least:
    a model whose rows are not independent of the rest of their batch fails it."""
    rows = runner.slice_rows
    if rows is not None:
        runner.slice_rows = max(1, min(rows, batch.shape[0] // 2))
    try:
        return probe(runner, as_given, batch, rtol)
    finally:
        runner.slice_rows = rows


def probe(runner: Callable, as_given: Callable, batch: torch.Tensor, rtol: float) -> Optional[str]:
    """None when the runner gives the module's labels and logits (to `rtol` relative to each
    row's largest logit) on the probe batch; otherwise what differed."""
    rows = batch.shape[0]
    try:
        expected = as_given(batch)
    except Exception:
        return None  # the module itself fails: the sampler reports that, on the module as given
    if not isinstance(expected, torch.Tensor) or expected.ndim != 2 or expected.shape[0] != rows:
        return None  # not logits: the sampler says so
    try:
        got = runner(batch)
    except Exception as exc:
        return f"it failed: {type(exc).__name__}"
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return f"logits of shape {tuple(getattr(got, 'shape', ()))} instead of {tuple(expected.shape)}"
    expected, got = expected.double(), got.double()
    if not torch.equal(torch.isfinite(expected), torch.isfinite(got)):
        return "non-finite logits where the module's are finite, or the reverse"
    finite = torch.isfinite(expected)
    labels, want = got.argmax(1), expected.argmax(1)
    if not torch.equal(labels, want):
        row = int((labels != want).nonzero()[0, 0])
        return f"label {int(labels[row])} instead of {int(want[row])} on probe row {row}"
    scale = expected.where(finite, torch.zeros_like(expected)).abs().amax(1, keepdim=True).clamp_min(1e-30)
    error = ((got - expected).abs() / scale).where(finite, torch.zeros_like(expected))
    worst = float(error.max())
    return None if worst <= rtol else f"a logit off by {worst:.2g} of its row's largest, above {rtol:g}"
