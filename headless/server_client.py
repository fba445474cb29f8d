"""A running ComfyUI server, through its own API: upload, queue, follow, interrupt, download.

Uploads are content-addressed and never overwrite (two photos with one name stay two files;
a file of the user's in the server's input folder is never replaced). Progress comes from
the server's websocket (the node being executed, sampler steps), with /history polling when
no websocket can be opened. Ctrl-C asks the server to stop the prompt (and drops it from the
queue when it has not started) before the interrupt goes on. Outputs are downloaded
atomically under names that cannot leave the output folder.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from pathlib import Path

from ..dense_face_core.errors import DenseFaceError, DenseFaceInputError
from ..dense_face_core.io_utils import atomic_path
from .overrides import place_inputs
from .progress import ProgressPrinter

UPLOAD_SUBFOLDER = "dense-face"


class ComfyServer:
    """One server URL, with the calls the runner needs."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self._object_info = None

    def _request(self, method: str, path: str, **kwargs):
        import requests

        try:
            response = requests.request(method, self.url + path, timeout=kwargs.pop("timeout", 120), **kwargs)
        except requests.RequestException as exc:
            raise DenseFaceError(f"cannot reach ComfyUI at {self.url}: {exc}") from None
        return response

    def object_info(self) -> dict:
        if self._object_info is None:
            response = self._request("GET", "/object_info")
            if response.status_code != 200:
                raise DenseFaceError(f"ComfyUI at {self.url} answered /object_info with {response.status_code}")
            self._object_info = response.json()
        return self._object_info

    def choices(self, class_type: str, input_name: str) -> list[str] | None:
        """The values the server offers for a COMBO input (None: no such node or input there)."""
        node = self.object_info().get(class_type)
        if node is None:
            return None
        for section in ("required", "optional"):
            spec = node.get("input", {}).get(section, {}).get(input_name)
            if spec is not None:
                return list(spec[0]) if isinstance(spec[0], list) else None
        return None

    def upload(self, path: Path) -> str:
        data = Path(path).read_bytes()
        name = hashlib.sha256(data).hexdigest()[:20] + (Path(path).suffix.lower() or ".png")
        response = self._request("POST", "/upload/image", files={"image": (name, data, "application/octet-stream")},
                                 data={"overwrite": "false", "subfolder": UPLOAD_SUBFOLDER, "type": "input"})
        if response.status_code != 200:
            raise DenseFaceError(f"ComfyUI at {self.url} refused the upload of {path}: {response.text[:500]}")
        info = response.json()
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def queue(self, wf: dict, client_id: str) -> str:
        response = self._request("POST", "/prompt", json={"prompt": wf, "client_id": client_id}, timeout=60)
        if response.status_code != 200:
            raise DenseFaceInputError(f"ComfyUI at {self.url} refused the workflow: {_refusal(response, wf)}")
        return response.json()["prompt_id"]

    def interrupt(self, prompt_id: str) -> None:
        """Stop this prompt: drop it from the queue if it waits, interrupt it if it runs."""
        self._request("POST", "/queue", json={"delete": [prompt_id]}, timeout=10)
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=10)

    def history(self, prompt_id: str) -> dict | None:
        response = self._request("GET", f"/history/{prompt_id}", timeout=60)
        return response.json().get(prompt_id) if response.status_code == 200 else None

    def download(self, entry: dict, out_dir: Path) -> list[Path]:
        """Every image of a finished prompt, under names that stay inside ``out_dir``, written atomically."""
        written = []
        for node_out in entry.get("outputs", {}).values():
            for img in node_out.get("images", []):
                name = Path(str(img.get("filename", ""))).name
                if name in ("", ".", ".."):
                    continue
                dest = Path(out_dir) / ("previews" if img.get("type") == "temp" else "") / name
                params = {k: img.get(k, "") for k in ("filename", "subfolder", "type")}
                response = self._request("GET", "/view", params=params)
                if response.status_code != 200:
                    raise DenseFaceError(f"ComfyUI at {self.url} could not send output {name}")
                with atomic_path(dest) as tmp:
                    tmp.write_bytes(response.content)
                written.append(dest)
        return written


def _refusal(response, wf: dict) -> str:
    """ComfyUI's validation answer in words, by node title, instead of its raw JSON."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:2000]
    titles = {k: v.get("_meta", {}).get("title", v.get("class_type")) for k, v in wf.items()}
    parts = [body.get("error", {}).get("message", "")]
    for node_id, info in (body.get("node_errors") or {}).items():
        for e in info.get("errors", []):
            parts.append(f"[{titles.get(str(node_id), node_id)}] {e.get('message')}: {e.get('details')}")
    return "; ".join(p for p in parts if p) or response.text[:2000]


#: Set by the thread that received Ctrl-C; runs followed in other threads (a pool of servers) see it within
#: a second and stop their prompt as the main thread would.
STOP_FOLLOWING = threading.Event()


def _check_stop() -> None:
    if STOP_FOLLOWING.is_set():
        raise KeyboardInterrupt


def _follow_websocket(server: ComfyServer, ws, prompt_id: str, printer: ProgressPrinter, timeout: float) -> None:
    """Progress events until the prompt ends; raises on a server-side error or interruption."""
    import websocket

    deadline = time.time() + timeout
    while time.time() < deadline:
        _check_stop()
        try:
            message = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        if not isinstance(message, str):
            continue  # binary previews
        event = json.loads(message)
        kind, data = event.get("type"), event.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if kind == "executing":
            if data.get("node") is None and data.get("prompt_id") == prompt_id:
                return
            printer.executing(data.get("node"))
        elif kind == "progress":
            printer.step(int(data.get("value", 0)), int(data.get("max", 0)))
        elif kind == "execution_success":
            return
        elif kind == "execution_error":
            node = printer.titles.get(str(data.get("node_id")), data.get("node_type", "?"))
            raise DenseFaceError(f"ComfyUI stopped at '{node}': "
                                 f"{str(data.get('exception_message', 'execution failed')).strip()}")
        elif kind == "execution_interrupted":
            raise DenseFaceError(f"the prompt was interrupted on the server ({server.url})")
    raise DenseFaceError(f"ComfyUI did not finish within {timeout:.0f}s (prompt {prompt_id})")


def _poll_history(server: ComfyServer, prompt_id: str, printer: ProgressPrinter, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        _check_stop()
        entry = server.history(prompt_id)
        status = (entry or {}).get("status", {})
        if status.get("status_str") == "error":
            msgs = [m for m in status.get("messages", []) if m[0] == "execution_error"]
            detail = msgs[-1][1] if msgs else {}
            raise DenseFaceError(f"ComfyUI stopped at node {detail.get('node_type', '?')}: "
                                 f"{detail.get('exception_message', 'execution failed')}")
        if entry and (status.get("completed") or entry.get("outputs")):
            return
        time.sleep(1.0)
    raise DenseFaceError(f"ComfyUI did not finish within {timeout:.0f}s (prompt {prompt_id})")


def _open_websocket(server: ComfyServer, client_id: str):
    try:
        import websocket

        ws = websocket.create_connection(server.url.replace("http", "ws", 1) + f"/ws?clientId={client_id}",
                                         timeout=10)
        ws.settimeout(1.0)
        return ws
    except Exception:  # noqa: BLE001 - no websocket there (a proxy, an old server): poll instead
        return None


def run_on_server(url: str, wf: dict, uploads: dict[str, Path], out_dir: Path, timeout: float = 3600,
                  server: ComfyServer | None = None) -> list[Path]:
    """Upload, queue, follow the prompt with live progress, download every output image."""
    server = server or ComfyServer(url)
    place_inputs(wf, {role: server.upload(path) for role, path in uploads.items()})
    titles = {k: v.get("_meta", {}).get("title", v["class_type"]) for k, v in wf.items()}
    printer = ProgressPrinter(titles)
    client_id = str(uuid.uuid4())
    ws = _open_websocket(server, client_id)
    prompt_id = server.queue(wf, client_id)
    try:
        if ws is not None:
            _follow_websocket(server, ws, prompt_id, printer, timeout)
        else:
            printer.note(f"(no websocket at {server.url}: waiting on /history)")
        _poll_history(server, prompt_id, printer, timeout)  # the server files the history after the last event
    except KeyboardInterrupt:
        server.interrupt(prompt_id)
        printer.note(f"interrupted: asked ComfyUI at {server.url} to stop prompt {prompt_id}; nothing was "
                     f"downloaded (what the server saved so far stays in its output folder)")
        raise
    finally:
        if ws is not None:
            ws.close()
    entry = server.history(prompt_id) or {}
    written = server.download(entry, out_dir)
    printer.finished(f"{len(written)} file(s) from {server.url}")
    return written
