"""Ray engine for the dead-filter scan: Ray Data reads and decodes on the workers, an actor pool runs the scan.

How it runs (``find_dead_filters(..., engine="ray")`` / ``onnxact check --engine ray``):

1. The driver expands the sources (folders, globs, list files) into path strings only and cuts
   them into exactly the chunks the local engine cuts (``batch_size`` paths; an array source is
   its own chunk, in slices of ``batch_size`` samples). One chunk is one Ray Data row.
2. ``map_batches`` with an actor class (``concurrency=N``): each actor holds one onnxruntime
   session of the in-graph statistics model (one ``StatsRunner``). For each row it reads and
   decodes the images with :func:`onnxact.images.iter_batches` (the local engine's decoder, so
   the same pixels and the same failure messages) and returns the pickled per-batch
   ``ChannelStats`` plus the images that failed.
3. The driver merges the per-batch statistics in chunk order, i.e. exactly the floating point
   operations of the local engine, so the report is identical (not just close). Each row carries
   its chunk index; a row seen twice (a retried task) is dropped, so nothing is counted twice.

Image paths must be readable from every node (a shared filesystem, or the same copy on each node);
in-memory arrays travel through the object store. Actors are restarted and their tasks retried
(up to ``RETRIES`` times) when a worker process dies.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .errors import ClusterError, DependencyError, InputError, ModelError, OnnxactError

__all__ = ["ClusterError", "scan_ray", "scan_exemplars_ray", "RETRIES", "KILL_ONCE_ENV"]

RETRIES = 3
#: Test hook: when this environment variable names a file that exists, the first actor to see it
#: deletes it and kills its own process mid-scan (to test that Ray's retry counts nothing twice).
KILL_ONCE_ENV = "ONNXACT_RAY_KILL_ONCE"


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data (ray[data])
    except ImportError as e:
        raise DependencyError(f"the Ray engine is unavailable ({e}); install it with: pip install 'onnxact[ray]'") from None
    return ray


def _is_tty() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``ray://HOST:PORT`` / ``HOST:PORT``; None for ``auto``/``local`` or no port."""
    a = address.strip()
    if a in ("auto", "local", ""):
        return None
    a = a.split("://", 1)[1] if "://" in a else a
    host, sep, port = a.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _connect(ray: Any, address: str | None) -> None:
    """Start a local Ray, or connect to ``address``; a cluster that can't be reached is one ClusterError line.

    Why the TCP probe first: ``ray.init`` retries an unreachable address for minutes.
    """
    if ray.is_initialized():
        return
    hp = _host_port(address) if address else None
    if hp is not None:
        try:
            socket.create_connection(hp, timeout=5).close()
        except OSError as e:
            why = e.strerror or str(e) or type(e).__name__
            raise ClusterError(f"cannot reach the Ray cluster at {address} ({why}); start one with 'ray start --head' "
                               "or fix --address") from None
    try:
        with _quiet_stderr():
            ray.init(address=address, include_dashboard=False, ignore_reinit_error=True,
                     logging_level=logging.ERROR, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ClusterError(f"cannot connect to {where}: {msg[:300]}") from None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[Any]:
    """Send fd 2 to /dev/null; yield a stream on the real stderr for our own progress bar.

    Why at the fd level: Ray's C++ core worker writes its log lines to fd 2 directly (e.g. one
    error-level line per actor about restartable constructor arguments, a line per dead worker),
    bypassing Python. Used only around ``ray.init`` and the scan, whose errors come back as
    exceptions, so nothing of ours is lost.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield sys.stderr
        return
    with os.fdopen(saved, "w", buffering=1) as real:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError):
            pass
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        try:
            yield real
        finally:
            try:
                sys.stderr.flush()
            except (AttributeError, ValueError):
                pass
            os.dup2(real.fileno(), 2)


@contextlib.contextmanager
def _data_context(ray: Any) -> Iterator[None]:
    """Ray Data without its own progress bars and start/stats log lines; restored afterwards.

    Our own bar (onnxact.progress) is drawn on a terminal instead, so the output is one clean bar.
    """
    ctx = ray.data.DataContext.get_current()
    settings = {"enable_progress_bars": False, "enable_operator_progress_bars": False,
                "print_on_execution_start": False, "enable_auto_log_stats": False, "verbose_stats_logs": False}
    old = {k: getattr(ctx, k) for k in settings if hasattr(ctx, k)}
    loggers = [logging.getLogger(n) for n in ("ray.data", "ray")]
    levels = [lg.level for lg in loggers]
    for k in old:
        setattr(ctx, k, settings[k])
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(ctx, k, v)
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _tasks(model: Any, items: Sequence[Any], batch_size: int) -> list[tuple]:
    """Cut the items into the local engine's chunks (see ``images.iter_batches``); one task per chunk.

    ``("paths", [path, ...])``: decoded on a worker. ``("array", label, key, ndarray)``: an
    in-memory slice. ``("file", label, key, start, stop, add_axis)``: a slice of a .npy/.npz file,
    loaded on the worker.
    """
    from .images import ArrayRef

    tasks: list[tuple] = []
    cur: list[str] = []
    rank = len(model.inputs[0].shape or ()) if getattr(model, "inputs", None) else 0
    for it in items:
        if isinstance(it, ArrayRef):
            if cur:
                tasks.append(("paths", cur))
                cur = []
            a = it.load()
            if a.ndim == 0:
                raise InputError(f"{it.label} holds a scalar, not inputs")
            add_axis = bool(rank and a.ndim == rank - 1)
            n = 1 if add_axis else int(a.shape[0])
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                if it.array is not None:
                    part = np.asarray(a[None] if add_axis else a[start:stop])
                    tasks.append(("array", it.label, it.key, part))
                else:
                    tasks.append(("file", it.label, it.key, start, stop, add_axis))
            continue
        cur.append(str(it))
        if len(cur) == batch_size:
            tasks.append(("paths", cur))
            cur = []
    if cur:
        tasks.append(("paths", cur))
    return tasks


class _ScanActor:
    """One Ray Data actor: one StatsRunner (one onnxruntime session); decodes and scans one chunk per row."""

    def __init__(self, blob: list[Any], providers: Any, layers: list[Any] | None, threshold: float,
                 count_above: bool, batch_size: int, strict: bool, preprocess_kw: dict[str, Any],
                 kill_marker: str | None) -> None:
        import ray

        from .model import load
        from .stats_runner import StatsRunner

        self.model = load(ray.get(blob[0]), providers=providers)
        # The driver's LayerInfos, in order; one onnxruntime thread per CPU Ray gave this actor (num_cpus=1).
        self.runner = StatsRunner(self.model, layers, threshold, count_above, threads=1)
        self.batch_size, self.strict, self.kw = batch_size, strict, preprocess_kw
        self.kill_marker = kill_marker

    def _maybe_die(self) -> None:
        m = self.kill_marker
        if m and os.path.exists(m):
            try:
                os.remove(m)
            except OSError:
                return  # another actor won the race
            os._exit(1)

    def _items(self, task: tuple) -> list[Any]:
        from .images import ArrayRef

        if task[0] == "paths":
            return list(task[1])
        if task[0] == "array":
            return [ArrayRef(task[1], task[2], task[3])]
        _, label, key, start, stop, add_axis = task
        a = ArrayRef(label, key).load()
        a = a[None] if add_axis else a
        return [ArrayRef(label, key, np.asarray(a[start:stop]))]

    def scan(self, task: tuple) -> Any:
        """``("ok", [(ChannelStats | None, failed), ...])`` per batch, or ``("error", OnnxactError)``."""
        from .images import iter_batches

        try:
            parts = []
            for b in iter_batches(self.model, self._items(task), batch_size=self.batch_size, strict=self.strict,
                                  **self.kw):
                parts.append((None if b.x is None else self.runner.run(b.x), b.failed))
            return ("ok", parts)
        except OnnxactError as e:
            return ("error", e)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for blob in batch["task"]:
            self._maybe_die()
            out.append(pickle.dumps(self.scan(pickle.loads(blob))))
        return {"idx": np.asarray(batch["idx"], np.int64), "result": np.asarray(out, dtype=object)}


def scan_ray(model: Any, images: Any, *, layers: Sequence[Any] | None = None, threshold: float = 0.0,
             batch_size: int = 32, strict: bool = False, count_above: bool = False, address: str | None = None,
             workers: int | None = None, show_progress: bool = True, **preprocess_kw: Any) -> Any:
    """Scan ``images`` on Ray (see the module docstring); returns the same ChannelStats as the local engine."""
    ray = _ray()
    from .images import expand_sources
    from .stats_runner import post_activation_layers

    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, not {workers}")
    # The local engine's StatsRunner checks, here on the driver so they are one clear line, not an actor crash.
    sel = list(model.layers if layers is None else layers)
    if not post_activation_layers(model, sel):
        raise ModelError(f"{model.name} has no capturable conv/pool layers to check; pass layer_names= or op_types=")
    if len(model.inputs) != 1:
        raise InputError(f"{model.name} has {len(model.inputs)} inputs; the dataset scan supports one image input")
    items = expand_sources(images)
    tasks = _tasks(model, items, batch_size)

    _connect(ray, address)  # after the input checks: bad input fails fast, without starting Ray
    n = max(1, int(workers or ray.cluster_resources().get("CPU", 1)))
    n = min(n, len(tasks))
    rows = [{"idx": k, "task": pickle.dumps(t)} for k, t in enumerate(tasks)]
    # The model goes to the object store once; the actors get a (small, inlined) list holding its ref.
    ctor = ([ray.put(model.proto.SerializeToString())], model.providers, None if layers is None else list(layers),
            float(threshold), count_above, batch_size, strict, preprocess_kw, os.environ.get(KILL_ONCE_ENV))

    tty = _is_tty()  # before fd 2 goes to /dev/null
    with warnings.catch_warnings(), _quiet_stderr() as err:
        # Ray's own deprecation notices (its DataContext sets deprecated fields when it is created, and
        # Ray 2.60 marks the pass-through remote args below as deprecated) are not the user's business.
        warnings.simplefilter("ignore", DeprecationWarning)
        with _data_context(ray):
            # The bar goes to the real stderr, and only when sys.stderr is a terminal (onnxact.progress).
            bar = (err if tty else sys.stderr) if show_progress else None
            result, failed = _run(ray, ctor, rows, n, bar)
    if result is None:
        raise InputError(f"none of the {len(failed)} images could be read; first: {failed[0][1] if failed else '-'}")
    result.failed = failed
    return result


def _run(ray: Any, ctor: tuple, rows: list[dict[str, Any]], n: int, bar: Any, actor: Any = None,
         watch: Any = None) -> tuple[Any, list]:
    """``actor``: the actor class (default ``_ScanActor``); ``watch``: wraps the row iterator (progress)."""
    from .progress import progress

    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    # Bounded restarts/retries: Ray Data's default is unbounded, so a worker that crashes on every try
    # would loop forever.
    ds = ds.map_batches(actor or _ScanActor, batch_size=1, batch_format="numpy", fn_constructor_args=ctor,
                        compute=ray.data.ActorPoolStrategy(size=n), num_cpus=1,
                        max_restarts=RETRIES, max_task_retries=RETRIES)
    it: Any = ds.iter_rows()
    if watch is not None:
        it = watch(it)
    if bar is not None:
        it = progress(it, total=len(rows), desc=f"scanning (ray, {n} workers)", stream=bar)
    try:
        result, failed = _merge_in_order(it, len(rows))
    except Exception as e:  # noqa: BLE001 - a Ray error around one of ours (e.g. an actor's constructor)
        ours = _our_error(e)
        if ours is None or ours is e:
            raise
        raise ours from None
    return result, failed


def _our_error(e: BaseException) -> OnnxactError | None:
    """The OnnxactError inside a Ray exception (``RayTaskError.cause``, then ``__cause__`` chains), if any.

    Ray re-raises a worker's exception as a class deriving from both RayTaskError and the original
    class, with the worker's traceback in its message; we want the original one-line error.
    """
    for _ in range(32):
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException) and cause is not e:
            e = cause
            continue
        if isinstance(e, OnnxactError):
            return e
        nxt = e.__cause__ or e.__context__
        if nxt is None:
            return None
        e = nxt
    return None


def _merge_in_order(rows: Any, total: int) -> tuple[Any, list[tuple[str, str]]]:
    """Merge per-batch statistics in chunk order (the local engine's order); a duplicate row is ignored."""
    pending: dict[int, Any] = {}
    nxt = 0
    result = None
    failed: list[tuple[str, str]] = []
    for row in rows:
        k = int(row["idx"])
        if k < nxt or k in pending:
            continue  # a retried task's second copy
        pending[k] = pickle.loads(row["result"])
        while nxt in pending:
            status, parts = pending.pop(nxt)
            if status == "error":
                raise parts
            for stats, bad in parts:
                failed += bad
                if stats is not None:
                    result = stats if result is None else result.merge(stats)
            nxt += 1
    if nxt != total:
        raise ClusterError(f"the Ray scan returned {nxt} of {total} chunks; rerun it")
    return result, failed



# -- exemplars (issue 15): the same machinery, one ExemplarRunner per actor ------------------------------
class _ExemplarActor(_ScanActor):
    """One Ray Data actor of the exemplar scan: decodes one chunk per row and returns its top lists."""

    def __init__(self, blob: list[Any], providers: Any, layers: list[Any], k: int, batch_size: int, strict: bool,
                 preprocess_kw: dict[str, Any], kill_marker: str | None) -> None:
        import ray

        from .exemplar_scan import ExemplarRunner
        from .model import load

        self.model = load(ray.get(blob[0]), providers=providers)
        self.runner = ExemplarRunner(self.model, layers, k, threads=1)  # type: ignore[assignment]
        self.batch_size, self.strict, self.kw = batch_size, strict, preprocess_kw
        self.kill_marker = kill_marker

    def scan(self, task: tuple) -> Any:
        """``("ok", [(TopK | None, failed), ...])`` per batch of the chunk, or ``("error", OnnxactError)``."""
        from .exemplar_scan import key_batches

        chunk, keys = task
        try:
            parts = []
            for b in key_batches(self.model, self._items(chunk), keys, self.batch_size, self.strict,
                                 input_name=self.runner.input_name, **self.kw):
                parts.append((self.runner.run(b.x, b.keys) if b.x is not None and b.keys else None, b.failed))
            return ("ok", parts)
        except OnnxactError as e:
            return ("error", e)


def _keyed_tasks(model: Any, items: Sequence[Any], keys: Sequence[int], batch_size: int) -> list[tuple[tuple, list[int]]]:
    """The local engine's chunks (``_tasks``), each with its samples' keys (``exemplar_scan.sample_keys``)."""
    from .images import ArrayRef

    out: list[tuple[tuple, list[int]]] = []
    pos, i = 0, 0
    while i < len(items):
        j = i + 1 if isinstance(items[i], ArrayRef) else i
        while j < len(items) and not isinstance(items[j], ArrayRef):
            j += 1
        group = list(items[i:j])
        n = len(group[0]) if isinstance(group[0], ArrayRef) else len(group)  # as sample_labels counts
        mine = [int(k) for k in keys[pos:pos + n]]
        done = 0
        for t in _tasks(model, group, batch_size):
            size = len(t[1]) if t[0] == "paths" else (t[3].shape[0] if t[0] == "array" else t[4] - t[3])
            out.append((t, mine[done:done + size]))
            done += size
        pos += n
        i = j
    return out


def scan_exemplars_ray(model: Any, items: Sequence[Any], keys: Sequence[int], layers: Sequence[Any], k: int, *,
                       batch_size: int = 32, strict: bool = False, progress: Any = None, address: str | None = None,
                       workers: int | None = None, **preprocess_kw: Any) -> Any:
    """The exemplar scan on Ray: the same chunks, keys and total-order merge as the local engine, so
    the same ``TopK`` (see :mod:`onnxact.exemplar_scan`)."""
    ray = _ray()
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, not {workers}")
    if len(model.inputs) != 1:
        raise InputError(f"{model.name} has {len(model.inputs)} inputs; the dataset scan supports one image input")
    tasks = _keyed_tasks(model, items, keys, batch_size)
    _connect(ray, address)
    n = min(max(1, int(workers or ray.cluster_resources().get("CPU", 1))), len(tasks))
    rows = [{"idx": i, "task": pickle.dumps(t)} for i, t in enumerate(tasks)]
    ctor = ([ray.put(model.proto.SerializeToString())], model.providers, list(layers), int(k), batch_size, strict,
            preprocess_kw, os.environ.get(KILL_ONCE_ENV))
    sizes = [len(t[1]) for t in tasks]
    total = sum(sizes)

    def watch(it: Any) -> Any:
        done = 0
        for row in it:
            done += sizes[int(row["idx"])]
            if progress is not None:
                progress(min(done, total), total)
            yield row

    with warnings.catch_warnings(), _quiet_stderr():
        warnings.simplefilter("ignore", DeprecationWarning)
        with _data_context(ray):
            result, failed = _run(ray, ctor, rows, n, None, actor=_ExemplarActor, watch=watch)
    if result is None:
        raise InputError(f"none of the {len(failed)} images could be read; first: {failed[0][1] if failed else '-'}")
    result.failed = failed
    return result
