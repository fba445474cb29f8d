"""Several ComfyUI servers at once: one worker per server, each taking the next item when it is free.

A generation depends only on its own graph and seed, so which server makes it does not change
the result; each server keeps its models loaded between the items it takes.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence

from .server_client import STOP_FOLLOWING


def split_urls(comfy_url: str | None) -> list[str | None]:
    """``URL`` or ``URL1,URL2,...`` -> the servers; no URL -> [None] (one in-process ComfyUI)."""
    urls = [u.strip() for u in (comfy_url or "").split(",") if u.strip()]
    return urls or [None]


def run_pool(workers: Sequence, items: Sequence, do: Callable) -> None:
    """``do(worker, item)`` for every item, the items shared out among the workers' threads; the first
    error stops the others from taking more and is raised here.

    One worker runs here, in the calling thread, so Ctrl-C reaches the run itself. With several, Ctrl-C
    lands in this thread: it tells the runs in the others to stop their prompts and waits for them.
    """
    STOP_FOLLOWING.clear()
    if len(workers) == 1:
        for item in items:
            do(workers[0], item)
        return
    pending: queue.Queue = queue.Queue()
    for item in items:
        pending.put(item)
    failures: list[BaseException] = []

    finished: list = []

    def loop(worker) -> None:
        try:
            _take(worker)
        finally:
            finished.append(worker)

    def _take(worker) -> None:
        while not failures:
            try:
                item = pending.get_nowait()
            except queue.Empty:
                return
            try:
                do(worker, item)
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, which raises it
                failures.append(exc)

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        failures.append(KeyboardInterrupt())
        STOP_FOLLOWING.set()
        # not Thread.join: a join that Ctrl-C interrupted can return at once later, the thread still running
        deadline = time.monotonic() + 30
        while len(finished) < len(threads) and time.monotonic() < deadline:
            time.sleep(0.05)
        raise
    if failures:
        raise failures[0]
