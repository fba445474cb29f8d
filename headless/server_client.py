"""One workflow on a running ComfyUI server: upload the photos, queue the prompt, fetch the outputs."""
from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from pathlib import Path

from ..dense_face_core.errors import DenseFaceError, DenseFaceInputError
from ..dense_face_core.io_utils import atomic_path
from .overrides import place_inputs


def run_on_server(url: str, wf: dict, uploads: dict[str, Path], out_dir: Path, timeout: float = 3600) -> list[Path]:
    """POST the prompt to a running ComfyUI, wait for it, download every output image."""
    import urllib.request

    url = url.rstrip("/")
    place_inputs(wf, {role: _upload(url, path) for role, path in uploads.items()})
    body = json.dumps({"prompt": wf, "client_id": str(uuid.uuid4())}).encode()
    req = urllib.request.Request(url + "/prompt", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            prompt_id = json.loads(r.read())["prompt_id"]
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise DenseFaceInputError(f"ComfyUI at {url} refused the workflow: {detail[:2000]}") from exc
    except OSError as exc:
        raise DenseFaceError(f"cannot reach ComfyUI at {url}: {exc}") from exc
    start = time.time()
    while True:
        with urllib.request.urlopen(f"{url}/history/{prompt_id}", timeout=60) as r:
            history = json.loads(r.read())
        entry = history.get(prompt_id)
        if entry and (entry.get("status", {}).get("completed") or entry.get("outputs")) or (
                entry and entry.get("status", {}).get("status_str") == "error"):
            break
        if time.time() - start > timeout:
            raise DenseFaceError(f"ComfyUI did not finish within {timeout:.0f}s (prompt {prompt_id})")
        print(f"[{time.time() - start:7.1f}s] waiting for ComfyUI ...", file=sys.stderr)
        time.sleep(2.0)
    status = entry.get("status", {})
    if status.get("status_str") == "error":
        msgs = [m for m in status.get("messages", []) if m[0] == "execution_error"]
        detail = msgs[-1][1] if msgs else {}
        raise DenseFaceError(f"ComfyUI stopped at node {detail.get('node_type', '?')}: "
                             f"{detail.get('exception_message', 'execution failed')}")
    return _download_outputs(url, entry, out_dir)


def _download_outputs(url: str, entry: dict, out_dir: Path) -> list[Path]:
    """Every image the prompt produced, under names that stay inside ``out_dir``, each written atomically."""
    import requests

    written = []
    for node_out in entry.get("outputs", {}).values():
        for img in node_out.get("images", []):
            name = Path(str(img.get("filename", ""))).name
            if name in ("", ".", ".."):
                continue
            dest = Path(out_dir) / ("previews" if img.get("type") == "temp" else "") / name
            params = {k: img.get(k, "") for k in ("filename", "subfolder", "type")}
            response = requests.get(f"{url}/view", params=params, timeout=120)
            response.raise_for_status()
            with atomic_path(dest) as tmp:
                tmp.write_bytes(response.content)
            written.append(dest)
    return written


UPLOAD_SUBFOLDER = "dense-face"


def _upload(url: str, path: Path) -> str:
    """Upload under a content-addressed name, never overwriting: two photos with one name stay two files,
    and a file of the user's in the server's input folder is never replaced."""
    import requests

    data = Path(path).read_bytes()
    name = hashlib.sha256(data).hexdigest()[:20] + (Path(path).suffix.lower() or ".png")
    response = requests.post(url + "/upload/image", files={"image": (name, data, "application/octet-stream")},
                             data={"overwrite": "false", "subfolder": UPLOAD_SUBFOLDER, "type": "input"},
                             timeout=120)
    if response.status_code != 200:
        raise DenseFaceError(f"ComfyUI at {url} refused the upload of {path}: {response.text[:500]}")
    info = response.json()
    return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]
