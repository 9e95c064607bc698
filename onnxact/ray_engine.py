"""Ray engine for the dead-filter scan: an actor pool of StatsRunners; the driver merges ChannelStats."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .errors import DependencyError, InputError


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise DependencyError(f"the Ray engine is unavailable ({e}); install it with: pip install 'onnxact[ray]'") from None
    return ray


def scan_ray(model: Any, images: Any, *, layers: Sequence[Any] | None = None, threshold: float = 0.0,
             batch_size: int = 32, strict: bool = False, count_above: bool = False, address: str | None = None,
             workers: int | None = None, show_progress: bool = True, **preprocess_kw: Any) -> Any:
    """Scan ``images`` on Ray; same batches as the local engine, so the merged statistics are identical."""
    ray = _ray()
    from ray.util import ActorPool

    from .images import count_samples, expand_sources, iter_batches
    from .model import load
    from .progress import progress
    from .stats import StatsRunner

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True)
    n = max(1, int(workers or ray.cluster_resources().get("CPU", 1)))
    model_ref = ray.put(model.proto.SerializeToString())
    layer_names = None if layers is None else [li.name for li in layers]

    @ray.remote(num_cpus=1, max_restarts=1, max_task_retries=1)
    class _Worker:
        def __init__(self, blob: Any) -> None:
            m = load(blob)
            sel = None if layer_names is None else [li for li in m.layers if li.name in set(layer_names)]
            self.runner = StatsRunner(m, sel, threshold, count_above)

        def run(self, x: Any) -> Any:
            import os

            marker = os.environ.get("ONNXACT_RAY_KILL_ONCE")  # test hook: die once, mid-scan
            if marker and os.path.exists(marker):
                try:
                    os.remove(marker)
                except OSError:
                    pass
                else:
                    os._exit(1)
            return self.runner.run(x)

    pool = ActorPool([_Worker.remote(model_ref) for _ in range(n)])
    items = expand_sources(images)
    total = count_samples(items)
    failed: list[tuple[str, str]] = []
    xs = []
    for b in iter_batches(model, items, batch_size=batch_size, strict=strict, **preprocess_kw):
        failed += b.failed
        if b.x is not None:
            xs.append(b.x)
    results = pool.map(lambda a, x: a.run.remote(x), xs)
    if show_progress:
        results = progress(results, total=math.ceil(total / batch_size), desc="scanning (ray)")
    result = None
    for part in results:
        result = part if result is None else result.merge(part)
    if result is None:
        raise InputError(f"none of the {len(failed)} images could be read; first: {failed[0][1] if failed else '-'}")
    result.failed = failed
    return result
