"""Running the images through the workers in input order, with memory flat for any dataset
size and a native crash on one image costing that image, not the build."""
from __future__ import annotations

import collections
from collections.abc import Callable, Iterator

from .plan import Item
from .worker import _close_worker, _init_worker, process_item

CRASHED = {"outcome": "crashed", "reason": "worker process died on this image", "sha1": None}


def _run_items(cfg: dict, items: list[tuple[object, Item]], on_result, workers: int,
               fn=None) -> None:
    """Process items in order with ``fn`` (default :func:`process_item`, a module-level
    function so it pickles); ``on_result(slot, result)`` is called in input order.

    Several workers: a forkserver process pool with a bounded window of in-flight items (memory stays
    flat for any dataset size). A worker that dies (e.g. a native crash on one image)
    breaks the pool; its in-flight items are retried one by one in fresh single-process
    pools, the one that kills again is recorded as ``crashed``, and the build goes on.
    """
    fn = fn or process_item
    if workers <= 1:
        _init_worker(cfg)
        try:
            for slot, item in items:
                on_result(slot, fn(item))
        finally:
            _close_worker()
        return
    _run_pool(cfg, items, on_result, workers, fn)


def _pool_factory(cfg: dict) -> Callable[[int], object]:
    """``n -> ProcessPoolExecutor`` whose workers run :func:`_init_worker` on ``cfg``."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # forkserver: children fork from a clean server (forking the caller is unsafe when it
    # already runs threads, e.g. torch in a trainer or test process), yet start fast
    # because the server preloads the heavy imports once.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([process_item.__module__, "cv2", "mediapipe.tasks.python.vision"]
                                   + (["insightface.model_zoo"] if cfg.get("arcface_onnx") else []))
    else:
        ctx = mp.get_context("spawn")

    def new_pool(n):
        return ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(cfg,))

    return new_pool


def _fill(pending: collections.deque, it: Iterator, pool, fn, window: int) -> None:
    while len(pending) < window:
        nxt = next(it, None)
        if nxt is None:
            break
        pending.append((nxt, pool.submit(fn, nxt[1])))


def _run_pool(cfg: dict, items, on_result, workers: int, fn) -> None:
    from concurrent.futures.process import BrokenProcessPool

    new_pool = _pool_factory(cfg)
    window = workers * 8
    got_any = False
    pool = new_pool(workers)
    pending: collections.deque = collections.deque()
    it = iter(items)
    try:
        while True:
            _fill(pending, it, pool, fn, window)
            if not pending:
                break
            (slot, _item), fut = pending[0]
            try:
                res = fut.result()
            except BrokenProcessPool:
                if not got_any:  # maybe the workers cannot start: surface the real error here
                    pool.shutdown(wait=False, cancel_futures=True)
                    _init_worker(cfg)
                    _close_worker()
                stuck = [p[0] for p in pending]
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                _retry_alone(stuck, fn, new_pool, on_result)
                pool = new_pool(workers)
                continue
            pending.popleft()
            got_any = True
            on_result(slot, res)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _retry_alone(stuck: list, fn, new_pool, on_result) -> None:
    """The in-flight items of a broken pool, each in a pool of its own: the one that kills its
    worker again is recorded as crashed."""
    from concurrent.futures.process import BrokenProcessPool

    for slot, item in stuck:
        solo = new_pool(1)
        try:
            r = solo.submit(fn, item).result()
        except BrokenProcessPool:
            r = dict(CRASHED)
        finally:
            solo.shutdown(wait=False, cancel_futures=True)
        on_result(slot, r)
