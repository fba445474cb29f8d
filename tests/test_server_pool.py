"""Ctrl-C with a pool of servers: the runs in the worker threads stop their prompts too.

The pool's threads are real; what each does is the loop ``run_on_server`` runs while it follows a
prompt (``_check_stop`` every second), so no server is needed to see who stops and when.
"""
from __future__ import annotations

import _thread
import threading
import time

import pytest
from dense_face.headless import server_client
from dense_face.headless.server_pool import run_pool


def test_ctrl_c_reaches_every_worker_of_a_pool():
    stopped, started = [], threading.Barrier(3)
    deadline = time.monotonic() + 60  # a worker that is never stopped fails the test instead of hanging it

    def follow(worker, item):
        started.wait(timeout=10)
        try:
            while time.monotonic() < deadline:
                server_client._check_stop()
                time.sleep(0.05)
        except KeyboardInterrupt:
            stopped.append(worker)  # where run_on_server asks the server to stop the prompt
            raise
        raise AssertionError(f"worker {worker} was not stopped within 60 s")

    threading.Timer(0.5, lambda: (started.wait(timeout=10), time.sleep(0.2), _thread.interrupt_main())).start()
    with pytest.raises(KeyboardInterrupt):
        run_pool(["a", "b"], [1, 2, 3], follow)
    assert sorted(stopped) == ["a", "b"]


def test_one_worker_runs_in_the_calling_thread():
    seen = []
    run_pool(["only"], [1, 2], lambda w, item: seen.append((w, item, threading.current_thread())))
    assert seen == [("only", 1, threading.main_thread()), ("only", 2, threading.main_thread())]
