"""Workflows executed by ComfyUI's own executor inside this process, with live progress on stderr."""
from __future__ import annotations

import shutil
import tempfile
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
        # Save/Preview nodes read the output folder when they are made, and the executor keeps them between
        # runs: they write into one staging folder for the runner's life, each run's files moved to its own.
        self.staging = Path(tempfile.mkdtemp(prefix="dense-face-out-"))

    def run(self, wf: dict, out_dir: Path) -> list[Path]:
        import comfy.utils
        import folder_paths

        folder_paths.set_output_directory(str(self.staging))  # again: another runner may have set its own
        folder_paths.set_temp_directory(str(self.staging / "previews"))

        titles = {k: v.get("_meta", {}).get("title", v["class_type"]) for k, v in wf.items()}
        outputs = _validated_outputs(wf, titles)
        self.server.printer = ProgressPrinter(titles)
        self.server.errors = []
        comfy.utils.set_progress_bar_global_hook(lambda value, total, *a, **k: self.server.printer.step(value, total))
        # the printer draws the step bar; ComfyUI's own tqdm bar would overwrite it on the same line
        tqdm_was = comfy.utils.PROGRESS_BAR_ENABLED
        comfy.utils.set_progress_bar_enabled(False)
        try:
            written = self._execute(wf, outputs, titles)
            if not written and any(n["class_type"] == "SaveImage" for n in wf.values()):
                # every node came from the executor's cache (the same graph and inputs as a run before):
                # run it afresh so the files are written again
                self.executor.reset()
                written = self._execute(wf, outputs, titles)
        finally:
            comfy.utils.set_progress_bar_enabled(tqdm_was)
            written = _move_new_files(self.staging, Path(out_dir))
        self.server.printer.finished(f"{len(written)} file(s)")
        return written

    def close(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def _execute(self, wf, outputs, titles) -> list[Path]:
        try:
            self.executor.execute(wf, str(uuid.uuid4()), {"client_id": "dense-face-cli"}, outputs)
        except KeyboardInterrupt:
            import comfy.model_management

            comfy.model_management.interrupt_current_processing(False)
            kept = _files_under(self.staging)
            self.server.printer.note(f"interrupted; {len(kept)} file(s) had been written (kept in the output folder)")
            raise
        if not getattr(self.executor, "success", True) or self.server.errors:
            err = self.server.errors[-1] if self.server.errors else {}
            node = titles.get(str(err.get("node_id")), err.get("node_type", "?"))
            message = str(err.get("exception_message", "execution failed")).strip()
            raise DenseFaceError(f"ComfyUI stopped at '{node}': {message}")
        return sorted(_files_under(self.staging))


def _move_new_files(staging: Path, out_dir: Path) -> list[Path]:
    """Every file of ``staging`` moved to the same place under ``out_dir``; a name already taken there gets
    ``-2``, ``-3``, ... (a file of an earlier run is never overwritten)."""
    moved = []
    for src in sorted(_files_under(staging)):
        dest = out_dir / src.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        k = 2
        while dest.exists():
            dest = dest.with_name(f"{src.stem}-{k}{src.suffix}")
            k += 1
        shutil.move(str(src), str(dest))
        moved.append(dest)
    return moved


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
    runner = InProcessRunner(host)
    try:
        return runner.run(wf, out_dir)
    finally:
        runner.close()


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
