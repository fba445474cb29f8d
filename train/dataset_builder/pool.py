"""The local engine: work items (chunks of images) through a process pool in input order, with
memory flat for any dataset size and a native crash on one image costing that image, not the build."""
from __future__ import annotations

import collections
import os
import sys
from collections.abc import Callable, Iterator

from .plan import Item
from .stages import _close_worker, _init_worker, process_item

CRASHED = {"outcome": "crashed", "reason": "worker process died on this image", "sha1": None}


def _run_items(cfg: dict, items: list[tuple[object, Item]], on_result, workers: int,
               fn=None, window: int | None = None) -> None:
    """Process items in order with ``fn`` (default :func:`process_item`, a module-level
    function so it pickles); ``on_result(slot, result)`` is called in input order. Items may be
    :class:`~.chunks.Chunk` s (``fn`` = :func:`~.stages.process_chunk`, a result list per chunk).

    Several workers: a forkserver process pool with a bounded window of in-flight items (memory stays
    flat for any dataset size). A worker that dies (e.g. a native crash on one image)
    breaks the pool; its in-flight items are retried one by one in fresh single-process
    pools (a chunk that kills again is retried image by image), the image that kills again is
    recorded as ``crashed``, and the build goes on. ``window``: items in flight (default 8 per worker).
    """
    fn = fn or process_item
    if workers <= 1:
        threads = _torch_threads(cfg)
        _init_worker(cfg)
        try:
            for slot, item in items:
                on_result(slot, fn(item))
        finally:
            _close_worker()
            if threads is not None:  # the models pinned this (the caller's) process to one thread
                import torch

                torch.set_num_threads(threads)
        return
    _run_pool(cfg, items, on_result, workers, fn, window or workers * 8)


def _torch_threads(cfg: dict) -> int | None:
    """This process's torch thread count, where the models may change it (torch captioners, CLIP)."""
    from .model_set import captioner_paths

    if "torch" not in sys.modules and not (captioner_paths(cfg) or cfg.get("clip_model")):
        return None
    import torch

    return torch.get_num_threads()


def _preload(cfg: dict) -> list[str]:
    """Modules the forkserver imports once for every worker it forks."""
    from .model_set import captioner_paths

    mods = [process_item.__module__, "cv2", "mediapipe.tasks.python.vision"]
    mods += ["insightface.model_zoo"] if cfg.get("arcface_onnx") else []
    mods += ["onnxruntime"] if cfg.get("restore_model") else []
    mods += ["torch", "transformers"] if captioner_paths(cfg) or cfg.get("clip_model") else []
    return mods


def _pool_factory(cfg: dict) -> Callable[[int], object]:
    """``n -> ProcessPoolExecutor`` whose workers run :func:`_init_worker` on ``cfg``."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # forkserver: children fork from a clean server (forking the caller is unsafe when it
    # already runs threads, e.g. torch in a trainer or test process), yet start fast
    # because the server preloads the heavy imports once.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_preload(cfg))
    else:
        ctx = mp.get_context("spawn")

    build_pid = os.getpid()

    def new_pool(n):
        return ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_pool_worker, initargs=(cfg, build_pid))

    return new_pool


def _init_pool_worker(cfg: dict, build_pid: int) -> None:
    """A pool worker's initializer: end with the build process, then :func:`_init_worker`."""
    _end_with_build(build_pid)
    _init_worker(cfg)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _end_with_build(build_pid: int) -> None:
    """Make this worker exit when the build process ends, also after ``kill -9`` (which runs no cleanup).

    A forkserver worker is the forkserver's child, not the build's, and the forkserver lives as long
    as any worker holds its "alive" pipe, while a worker blocked on the call queue never sees the build
    go (it holds both ends of that pipe itself). So each worker watches the build process: a pidfd
    (Linux) becomes readable the moment it exits, elsewhere its pid is polled. Once the workers are
    gone the forkserver and the resource tracker see end-of-file and exit by themselves. On Linux
    ``PR_SET_PDEATHSIG`` also kills the worker with its direct parent (the forkserver, or the build
    itself with the spawn start method).
    """
    import signal
    import threading

    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    pidfd = None
    try:
        pidfd = os.pidfd_open(build_pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or already gone (then the poll below sees it)
        pass
    if os.getppid() != parent or not _pid_running(build_pid):  # died before the watch began
        os._exit(1)
    threading.Thread(target=_watch_build, args=(build_pid, pidfd, parent), daemon=True,
                     name="dense-face-build-watch").start()


def _watch_build(build_pid: int, pidfd: int | None, parent: int) -> None:
    import select
    import time

    while True:
        if pidfd is not None:
            if select.select([pidfd], [], [], 1.0)[0]:
                os._exit(1)
        else:
            time.sleep(0.5)
            if not _pid_running(build_pid):
                os._exit(1)
        if os.getppid() != parent:  # the forkserver (or the build, with spawn) is gone
            os._exit(1)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists (another user's process)
        return True
    return True


def _fill(pending: collections.deque, it: Iterator, pool, fn, window: int) -> None:
    while len(pending) < window:
        nxt = next(it, None)
        if nxt is None:
            break
        pending.append((nxt, pool.submit(fn, nxt[1])))


def _run_pool(cfg: dict, items, on_result, workers: int, fn, window: int) -> None:
    from concurrent.futures.process import BrokenProcessPool

    new_pool = _pool_factory(cfg)
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
    """The in-flight items of a broken pool, each in a pool of its own: the image that kills its
    worker again is recorded as crashed."""
    for slot, item in stuck:
        on_result(slot, _alone(item, fn, new_pool))


def _alone(work, fn, new_pool):
    """``fn(work)`` in a one-process pool; a chunk that kills it is split into single images."""
    from concurrent.futures.process import BrokenProcessPool

    solo = new_pool(1)
    try:
        return solo.submit(fn, work).result()
    except BrokenProcessPool:
        pass
    finally:
        solo.shutdown(wait=False, cancel_futures=True)
    split = getattr(work, "split", None)
    if split is None:
        return dict(CRASHED)
    parts = split()
    if len(parts) == 1:
        return [dict(CRASHED)]
    return [r for part in parts for r in _alone(part, fn, new_pool)]
