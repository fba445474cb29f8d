"""Workflows executed by ComfyUI's own executor inside this process, with live progress on stderr."""
from __future__ import annotations

import uuid
from pathlib import Path

from ..dense_face_core.errors import DenseFaceError, DenseFaceInputError
from .progress import ProgressPrinter


class _HeadlessServer:
    """The little of PromptServer that ComfyUI's executor talks to: events go to the progress printer."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.printer = ProgressPrinter()
        self.errors: list = []

    def send_sync(self, event, data, sid=None):
        if event == "executing" and isinstance(data, dict) and data.get("node"):
            self.printer.executing(data["node"])
        elif event == "execution_error":
            self.errors.append(data)

    def queue_updated(self):
        pass


class InProcessRunner:
    """ComfyUI's own executor in this process, one for every run of a command: the models it loaded stay
    loaded between runs (an evaluation does not reload the checkpoint for every generation)."""

    def __init__(self, host):
        import execution

        self.host = host
        self.server = _HeadlessServer()
        self.executor = new_executor(execution, self.server)

    def run(self, wf: dict, out_dir: Path) -> list[Path]:
        import comfy.utils

        titles = {k: v.get("_meta", {}).get("title", v["class_type"]) for k, v in wf.items()}
        outputs = _validated_outputs(wf, titles)
        self.server.printer = ProgressPrinter(titles)
        self.server.errors = []
        comfy.utils.set_progress_bar_global_hook(lambda value, total, *a, **k: self.server.printer.step(value, total))
        before = _files_under(out_dir)
        written = self._execute(wf, outputs, titles, out_dir, before)
        if not written and any(n["class_type"] == "SaveImage" for n in wf.values()):
            # every node came from the executor's cache (the same graph and inputs as a run before):
            # run it afresh so the files are written again
            self.executor.reset()
            written = self._execute(wf, outputs, titles, out_dir, before)
        self.server.printer.finished(f"{len(written)} file(s)")
        return written

    def _execute(self, wf, outputs, titles, out_dir, before) -> list[Path]:
        try:
            self.executor.execute(wf, str(uuid.uuid4()), {"client_id": "dense-face-cli"}, outputs)
        except KeyboardInterrupt:
            import comfy.model_management

            comfy.model_management.interrupt_current_processing(False)
            kept = sorted(_files_under(out_dir) - before)
            self.server.printer.note(f"interrupted; {len(kept)} file(s) had been written to {out_dir}")
            raise
        if not getattr(self.executor, "success", True) or self.server.errors:
            err = self.server.errors[-1] if self.server.errors else {}
            node = titles.get(str(err.get("node_id")), err.get("node_type", "?"))
            message = str(err.get("exception_message", "execution failed")).strip()
            raise DenseFaceError(f"ComfyUI stopped at '{node}': {message}")
        return sorted(_files_under(out_dir) - before)


def _validated_outputs(wf: dict, titles: dict) -> list:
    """ComfyUI's own validation (sync in 2024, async with a prompt id in 0.3.x); its output nodes."""
    import asyncio
    import inspect

    import execution

    validate = execution.validate_prompt
    if "prompt_id" in inspect.signature(validate).parameters:
        result = validate(str(uuid.uuid4()), wf, None)
    else:
        result = validate(wf)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    valid, error, outputs, node_errors = result
    if not valid:
        raise DenseFaceInputError(f"the workflow does not validate: {error.get('message')} "
                                  f"{_format_node_errors(node_errors, titles)}")
    return outputs


def run_in_process(host, wf: dict, out_dir: Path) -> list[Path]:
    """One run on a runner of its own (tests, one-off calls); sessions keep one InProcessRunner."""
    return InProcessRunner(host).run(wf, out_dir)


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
