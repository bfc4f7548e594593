"""ONNX Runtime sessions for one model version: provider choice, options, warm-up, runs on a thread or the loop.

`instance_count` sessions share a thread pool of the same size; each run borrows a free session, so N batches run
at once with no session used by two threads. ONNX Runtime releases the GIL while it computes.

Two ways to run a batch: on a session thread (`run_on_thread`), or on the calling thread, the event loop, with
instance 0's sessions (`run_on_loop`). Which one is the scheduler's decision (scheduling/placement.py); the runtime
decides nothing by time and states only the facts that decision needs (`loop_ready`: no session thread is busy and
the session for the output set exists).

Output-selective runs: a batch that needs only some outputs runs on a session over the graph pruned to them
(pruning.py), created on the instance's own thread the first time that set is asked for (its first run is its
warm-up) and kept, at most MAX_PRUNED_SESSIONS per instance; past that, or when pruning removes no node, the full
session runs and only the asked outputs are copied out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as OrtInvalidArgument

from cnnserve.contracts.datatypes import DATATYPES, datatype_from_ort
from cnnserve.service.errors import InferenceFailed, InvalidInput, ModelLoadError, ModelNotReady
from cnnserve.service.execution import pruning
from cnnserve.service.execution.workers import SessionWorkers
from cnnserve.service.types import ComputeTimes, ModelSpec, SessionOptions, TensorSpec

logger = logging.getLogger(__name__)

Tensors = dict[str, npt.NDArray[Any]]

CPU = "CPUExecutionProvider"
_PROVIDER_CHAINS = {
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU),
    "cuda": ("CUDAExecutionProvider", CPU),
    "cpu": (CPU,),
}
_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


_DEFAULT_OPTIONS = SessionOptions()
MAX_PRUNED_SESSIONS = 4
"""Pruned sessions kept per instance: each holds its share of the weights again, and requests rarely vary much."""
_unavailable_warned: set[str] = set()


def session_options(options: SessionOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.graph_optimization_level = _OPTIMIZATION_LEVELS[options.graph_optimization_level]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.allow_spinning else "0")
    return so


def graph_tensors(node_args: Sequence[Any]) -> tuple[TensorSpec, ...]:
    """ONNX Runtime's NodeArgs as protocol tensors; symbolic or unknown dimensions become -1."""
    specs = []
    for arg in node_args:
        try:
            datatype = datatype_from_ort(arg.type)
        except ValueError:
            raise ModelLoadError(
                f"graph tensor '{arg.name}' has type {arg.type}, which this server cannot serve"
            ) from None
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
        specs.append(TensorSpec(arg.name, datatype, shape))
    return tuple(specs)


class WarmupFeed(NamedTuple):
    """One warm-up sample the model's config gives (registry/warmup.py): its inputs at `batch_size`, run `runs`
    times on every instance."""

    name: str
    batch_size: int
    inputs: Tensors
    runs: int = 1


GENERIC_TEXT = "0"
"""What the server's own warm-up puts in each BYTES element: a string most graphs accept, numbers (a Cast to a
number) included, where an empty one is refused."""


def warm_up_batch_sizes(spec: ModelSpec) -> list[int]:
    if spec.max_batch_size <= 1:
        return [1]
    preferred = spec.dynamic_batching.preferred_batch_sizes if spec.dynamic_batching is not None else ()
    return sorted({1, *preferred, spec.max_batch_size})


def _guesses(spec: ModelSpec, name: str, dims: list[int]) -> list[int]:
    """What warm-up puts for each of an input's variable dimensions: the stride for a padded image's H and W."""
    image = spec.image_input
    if image is not None and image.name == name and image.preprocessing.padded and len(dims) == 4:
        stride = image.preprocessing.stride
        spatial = (1, 2) if image.preprocessing.layout == "NHWC" else (2, 3)
        return [stride if axis in spatial else 1 for axis in range(4)]
    return [1] * len(dims)


class _Instance:
    """One model instance, owned by one worker thread: its full session and its pruned ones by output set (None:
    pruning would remove nothing, so the full session serves that set)."""

    __slots__ = ("pruned", "session")

    def __init__(self, session: Any) -> None:
        self.session = session
        self.pruned: dict[frozenset[str], Any | None] = {}


class Runtime:
    """Sessions for one model file. Construction blocks (loads the model): call it from a worker thread."""

    def __init__(
        self,
        model_path: Path,
        *,
        providers: Sequence[str] = ("cpu",),
        options: SessionOptions = _DEFAULT_OPTIONS,
        instance_count: int = 1,
        label: str = "",
        required_provider: str | None = None,
    ) -> None:
        """required_provider: a short name ("cuda") the model must run on, or ModelLoadError; no CPU fallback."""
        self.label = label or str(model_path)
        so = session_options(options)
        if required_provider is not None:
            first, self.provider = self._required_session(model_path, required_provider, providers, so)
        else:
            first, self.provider = self._first_session(model_path, providers, so)
        chain = next(c for c in _PROVIDER_CHAINS.values() if c[0] == self.provider)
        self._path, self._so, self._chain = model_path, so, chain
        self._sessions = [first] + [self._create(model_path, so, chain) for _ in range(max(1, instance_count) - 1)]
        self.inputs = graph_tensors(first.get_inputs())
        self.outputs = graph_tensors(first.get_outputs())
        self._input_dtypes = {t.name: DATATYPES[t.datatype].numpy for t in self.inputs}  # BYTES: object, of str
        self._output_names = [t.name for t in self.outputs]
        self._graph: Any = None  # the ONNX model, read on the first pruning and kept for the next ones
        self._graph_lock = threading.Lock()
        self.pruned_nodes: dict[frozenset[str], tuple[int, int]] = {}
        """Per output set pruned so far: (nodes kept, nodes in the graph); kept == total means not pruned."""
        self._instances = [_Instance(s) for s in self._sessions]
        self._workers = SessionWorkers(self._instances, name=f"ort-{label}")
        self.warm_up_times: dict[int, float] = {}
        """Seconds of a steady run per warmed batch size (a second run after the first), for first estimates."""
        self._closed = False
        logger.info("event=sessions_created model=%s provider=%s instances=%d", self.label, self.provider,
                    len(self._sessions))  # fmt: skip

    @property
    def instance_count(self) -> int:
        return len(self._sessions)

    def _create(self, path: Path, so: ort.SessionOptions, chain: Sequence[str]) -> Any:
        try:
            return ort.InferenceSession(str(path), sess_options=so, providers=list(chain))
        except Exception as err:  # ORT raises its own classes for unreadable or invalid models
            raise ModelLoadError(f"{path}: ONNX Runtime cannot load it: {err}") from None

    def _first_session(self, path: Path, preference: Sequence[str], so: ort.SessionOptions) -> tuple[Any, str]:
        """The first preferred provider that really runs the model (checked after creation), else CPU."""
        available = set(ort.get_available_providers())
        for wanted in preference:
            chain = _PROVIDER_CHAINS.get(wanted)
            if chain is None:
                logger.warning("event=provider_unknown model=%s provider=%s", self.label, wanted)
                continue
            if chain[0] == CPU:
                break
            if chain[0] not in available:
                if chain[0] not in _unavailable_warned:  # once per process: every model would repeat it
                    _unavailable_warned.add(chain[0])
                    logger.warning("event=provider_unavailable provider=%s available=%s", chain[0], sorted(available))
                continue
            try:
                session = ort.InferenceSession(str(path), sess_options=so, providers=list(chain))
            except Exception as err:
                logger.warning("event=provider_failed model=%s provider=%s error=%s", self.label, chain[0], err)
                continue
            if session.get_providers()[0] == chain[0]:
                return session, chain[0]
            logger.warning("event=provider_not_used model=%s provider=%s used=%s", self.label, chain[0],
                           session.get_providers()[0])  # fmt: skip
        return self._create(path, so, (CPU,)), CPU

    def _required_session(self, path: Path, required: str, allowed: Sequence[str], so: ort.SessionOptions
                          ) -> tuple[Any, str]:  # fmt: skip
        """A session on `required`'s provider itself, or ModelLoadError saying why it cannot be had."""
        chain = _PROVIDER_CHAINS.get(required)
        if chain is None:
            raise ModelLoadError(f"{self.label}: requires_provider '{required}' is not one of "
                                 f"{', '.join(_PROVIDER_CHAINS)}")  # fmt: skip
        wanted = chain[0]
        refusal = f"{self.label}: needs {wanted} (requires_provider={required}) and is not served on another"
        if required not in allowed:
            raise ModelLoadError(f"{refusal}: this server allows {', '.join(allowed)}")
        available = ort.get_available_providers()
        if wanted not in available:
            raise ModelLoadError(f"{refusal}: this ONNX Runtime has {', '.join(available)}")
        session = self._create(path, so, chain)
        if session.get_providers()[0] != wanted:
            raise ModelLoadError(f"{refusal}: ONNX Runtime fell back to {session.get_providers()[0]}")
        return session, wanted

    def warm_up(self, spec: ModelSpec, samples: Sequence[WarmupFeed] = ()) -> None:
        """Run every instance before the model reports ready, so no request pays for ONNX Runtime's first run at a
        shape, and time a steady run per batch size for the first estimates (`warm_up_times`). Blocks.

        `samples` (the config's model_warmup) run as given, and one that fails fails the load naming it, as in
        Triton. Without, the server makes its own: zeros, and "0" for strings, at each batch size the batcher aims
        at; a padded image's variable height and width guessed as its stride, other variable dimensions as 1. Such
        data may not suit a graph that serves real requests well (a size it cannot take, a string it cannot parse),
        so its failure only warns: the model loads, and sizes that did not run are estimated from those that did.
        A model with optional outputs also builds, on every instance, the pruned session of requests naming none.
        """
        if samples:
            for sample in samples:
                for _ in range(max(1, sample.runs)):
                    error = self._warm_run(spec, sample.batch_size, sample.inputs)
                    if error is not None:
                        raise ModelLoadError(f"{self.label}: failed to run warmup sample '{sample.name}': {error}")
            return
        for batch in warm_up_batch_sizes(spec):
            error = self._warm_run(spec, batch, self._generic_feed(spec, batch))
            if error is not None:
                logger.warning("event=warmup_failed model=%s batch=%d error=%s consequence=%s", self.label, batch,
                               error, "ready without warming this and larger batch sizes; the first such requests "
                               "pay for the first run")  # fmt: skip
                return

    def _generic_feed(self, spec: ModelSpec, batch: int) -> Tensors:
        feed: Tensors = {}
        for tensor in spec.inputs:
            dims = list(tensor.runtime_shape)  # the graph's: a config reshape applies above
            if spec.max_batch_size > 0 and dims:
                dims[0] = batch
            dims = [guess if d == -1 else d for d, guess in zip(dims, _guesses(spec, tensor.name, dims), strict=True)]
            dtype = self._input_dtypes[tensor.name]
            feed[tensor.name] = (
                np.full(dims, GENERIC_TEXT, dtype=object) if dtype.kind == "O" else np.zeros(dims, dtype)
            )
        return feed

    def _warm_run(self, spec: ModelSpec, batch: int, feed: Tensors) -> str | None:
        """Every instance runs `feed` (the full session, then the one requests naming no outputs take, twice: the
        second run timed); why it failed, or None."""
        try:
            feed = {name: _as_text(name, array) if array.dtype.kind == "O" else array for name, array in feed.items()}
            for instance in self._instances:
                session, names = self._session_for(instance, spec.default_compute)
                runs = [(instance.session, self._output_names)]
                runs += [(session, names)] if session is not instance.session else []
                for to_run, output_names in runs:
                    to_run.run(output_names, feed)
                started = time.monotonic()
                session.run(names, feed)  # what a request naming no outputs costs, now that the shape is warm
                self.warm_up_times[batch] = time.monotonic() - started
        except Exception as err:  # ORT's own classes; InvalidInput for strings that are not UTF-8
            return str(err)
        return None

    def run_on_thread(self, inputs: Tensors, outputs: frozenset[str] | None = None
                      ) -> Coroutine[Any, Any, tuple[Tensors, ComputeTimes]]:  # fmt: skip
        """Run one batch for `outputs` (None: all of them) on a free session thread; await the result."""
        if self._closed:
            raise ModelNotReady(f"{self.label}: sessions released")
        return self._workers.submit(self._run_sync, (inputs, outputs))  # no coroutine of its own: one frame less

    def run_on_loop(self, inputs: Tensors, outputs: frozenset[str] | None = None) -> tuple[Tensors, ComputeTimes]:
        """Run one batch on the calling thread with instance 0's sessions. Only while `loop_ready(outputs)`: then no
        thread holds instance 0 and no session has to be built."""
        if self._closed:
            raise ModelNotReady(f"{self.label}: sessions released")
        return self._run_sync(self._instances[0], (inputs, outputs))

    def loop_ready(self, outputs: frozenset[str] | None) -> bool:
        """Facts, no timing: the sessions are open, no session thread is busy (so instance 0 is free), and instance
        0 has the session for `outputs` already (building a pruned one can take milliseconds)."""
        if self._closed or self._workers.outstanding:
            return False
        return outputs is None or outputs in self._instances[0].pruned or outputs.issuperset(self._output_names)

    def _session_for(self, instance: _Instance, outputs: frozenset[str] | None) -> tuple[Any, list[str]]:
        """The session to run and the names to ask it for. On the instance's thread."""
        if outputs is None:
            return instance.session, self._output_names
        names = [name for name in self._output_names if name in outputs]
        if len(names) == len(self._output_names):
            return instance.session, names
        if outputs in instance.pruned:
            session = instance.pruned[outputs]
        elif len(instance.pruned) < MAX_PRUNED_SESSIONS:
            session = instance.pruned[outputs] = self._pruned_session(outputs)
        else:
            session = None
        return session or instance.session, names

    def _pruned_session(self, outputs: frozenset[str]) -> Any | None:
        with self._graph_lock:  # instances prune on their own threads; the graph is read once
            if self._graph is None:
                self._graph = onnx.load(str(self._path))
        graph, total = self._graph, len(self._graph.graph.node)
        model, kept = pruning.prune(graph, outputs)
        self.pruned_nodes[outputs] = (kept, total)
        # Built even when no node goes: ONNX Runtime runs a graph whose outputs are only those asked faster (the
        # classifier's logits alone: 10-15% less per run than the same graph with its feature maps as outputs).
        try:
            session = ort.InferenceSession(model.SerializeToString(), sess_options=self._so,
                                           providers=list(self._chain))  # fmt: skip
        except Exception as err:  # a model past protobuf's 2 GB, or one ORT reads only from its file: run it whole
            logger.warning("event=pruned_session_failed model=%s outputs=%s error=%s", self.label,
                           ",".join(sorted(outputs)), err)  # fmt: skip
            return None
        logger.info("event=pruned_session_created model=%s outputs=%s nodes=%d/%d", self.label,
                    ",".join(sorted(outputs)), kept, total)  # fmt: skip
        return session

    def _run_sync(self, instance: _Instance, arg: object) -> tuple[Tensors, ComputeTimes]:
        """On the instance's own thread."""
        inputs: Tensors
        wanted: frozenset[str] | None
        inputs, wanted = arg  # type: ignore[misc]
        session, output_names = self._session_for(instance, wanted)  # a new pruned session: its warm-up, untimed
        started = time.monotonic()
        feed = {}
        for name, dtype in self._input_dtypes.items():
            array = inputs.get(name)
            if array is None:
                raise InvalidInput(f"{self.label}: input '{name}' is missing")
            if dtype.kind == "O":
                feed[name] = _as_text(name, array)
                continue
            if array.dtype != dtype:
                raise InvalidInput(f"{self.label}: input '{name}' must be {dtype}, got {array.dtype}")
            feed[name] = np.ascontiguousarray(array)
        fed = time.monotonic()
        try:
            results = session.run(output_names, feed)
        except Exception as err:
            logger.warning("event=run_failed model=%s error=%s", self.label, err)
            if isinstance(err, OrtInvalidArgument):  # ORT's own verdict: the values, not the model
                raise InvalidInput(
                    f"{self.label}: the model refused the input values (for example an index out of range)"
                ) from err
            raise InferenceFailed(f"{self.label}: ONNX Runtime failed to run the batch") from err
        ran = time.monotonic()
        outputs = dict(zip(output_names, results, strict=True))
        done = time.monotonic()
        return outputs, ComputeTimes(fed - started, ran - fed, done - ran)

    def close(self) -> None:
        """Wait for running batches, then release the sessions. Blocks; call from a thread."""
        self._closed = True
        self._workers.close()
        self._sessions.clear()
        for instance in self._instances:
            instance.pruned.clear()
        self._graph = None


def check_text(name: str, items: npt.NDArray[Any]) -> None:
    """InvalidInput unless every bytes element of a BYTES input is UTF-8 text, which is all ONNX Runtime's Python API
    takes for a string tensor: for callers to ask before a request joins a batch."""
    try:
        # One pass in C: joined by NUL (a whole character), the elements are valid UTF-8 exactly when each one is.
        b"\0".join(item for item in items.flat if isinstance(item, bytes)).decode("utf-8")
    except UnicodeDecodeError:
        _as_text(name, items)  # finds the element and names it
        raise AssertionError("unreachable: some element is not UTF-8") from None


def _as_text(name: str, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """BYTES elements as str: ONNX Runtime's Python API takes string tensors only as UTF-8 text (it would store
    the repr of a bytes object), so bytes that are not UTF-8 cannot reach the model."""
    text = np.empty(array.shape, dtype=object)
    for index, item in enumerate(array.flat):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"input '{name}': BYTES element {index} is not UTF-8, which ONNX Runtime string tensors require"
                ) from None
        text.flat[index] = item if isinstance(item, str) else str(item)
    return text
