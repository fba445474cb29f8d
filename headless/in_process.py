"""One workflow executed by ComfyUI's own executor inside this process, progress on stderr."""
from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from ..dense_face_core.errors import DenseFaceError, DenseFaceInputError


class _HeadlessServer:
    """The little of PromptServer that ComfyUI's executor talks to: progress goes to stderr."""

    def __init__(self, titles: dict[str, str]):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.titles = titles
        self.errors: list = []
        self.started = time.time()

    def send_sync(self, event, data, sid=None):
        if event == "executing" and isinstance(data, dict) and data.get("node"):
            node = str(data["node"])
            print(f"[{time.time() - self.started:7.1f}s] {self.titles.get(node, node)}", file=sys.stderr)
        elif event == "execution_error":
            self.errors.append(data)

    def queue_updated(self):
        pass


def _progress_hook(value, total, preview=None, *args, **kwargs):
    if total and (value == total or value % max(1, total // 10) == 0):
        print(f"            step {value}/{total}", file=sys.stderr)


def run_in_process(host, wf: dict, out_dir: Path) -> list[Path]:
    import asyncio
    import inspect

    import comfy.utils
    import execution

    titles = {k: v.get("_meta", {}).get("title", v["class_type"]) for k, v in wf.items()}
    prompt_id = str(uuid.uuid4())
    validate = execution.validate_prompt
    if "prompt_id" in inspect.signature(validate).parameters:
        result = validate(prompt_id, wf, None)
    else:
        result = validate(wf)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    valid, error, outputs, node_errors = result
    if not valid:
        raise DenseFaceInputError(f"the workflow does not validate: {error.get('message')} "
                                  f"{_format_node_errors(node_errors, titles)}")
    server = _HeadlessServer(titles)
    executor = new_executor(execution, server)
    comfy.utils.set_progress_bar_global_hook(_progress_hook)
    before = _files_under(out_dir)
    executor.execute(wf, prompt_id, {"client_id": "dense-face-cli"}, outputs)
    if not getattr(executor, "success", True) or server.errors:
        err = server.errors[-1] if server.errors else {}
        node = titles.get(str(err.get("node_id")), err.get("node_type", "?"))
        raise DenseFaceError(f"ComfyUI stopped at '{node}': {err.get('exception_message', 'execution failed')}")
    return sorted(_files_under(out_dir) - before)


def new_executor(execution, server):
    """ComfyUI's PromptExecutor with the cache settings main.py would give it (0.3.x needs them; 0.38 takes
    --cache-ram as a list and reads an inactive-RAM threshold too)."""
    import inspect

    if "cache_args" not in inspect.signature(execution.PromptExecutor.__init__).parameters:
        return execution.PromptExecutor(server)  # 2024 builds
    from comfy.cli_args import args

    lru = getattr(args, "cache_lru", 0) or 0
    ram_arg = getattr(args, "cache_ram", 0) or 0
    ram_list = list(ram_arg) if isinstance(ram_arg, (list, tuple)) else [ram_arg]
    ram = float(ram_list[0]) if ram_list else 0.0
    ram_inactive = float(ram_list[1]) if len(ram_list) > 1 else 0.0
    kind = execution.CacheType
    cache_type = (kind.LRU if lru > 0 else kind.RAM_PRESSURE if ram > 0 and hasattr(kind, "RAM_PRESSURE")
                  else kind.NONE if getattr(args, "cache_none", False) else kind.CLASSIC)
    return execution.PromptExecutor(server, cache_type=cache_type,
                                    cache_args={"lru": lru, "ram": ram, "ram_inactive": ram_inactive})


def _format_node_errors(node_errors: dict, titles: dict) -> str:
    parts = []
    for node_id, info in (node_errors or {}).items():
        for e in info.get("errors", []):
            parts.append(f"[{titles.get(node_id, node_id)}] {e.get('message')}: {e.get('details')}")
    return "; ".join(parts)


def _files_under(folder: Path) -> set[Path]:
    return {p for p in Path(folder).rglob("*") if p.is_file()}
