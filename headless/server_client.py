"""One workflow on a running ComfyUI server: upload the photos, queue the prompt, fetch the outputs."""
from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from pathlib import Path

from ..dense_face_core.errors import DenseFaceError, DenseFaceInputError
from .workflow_graph import TITLE_REFERENCE, TITLE_TARGET, nodes_titled


def run_on_server(url: str, wf: dict, uploads: dict[str, Path], out_dir: Path, timeout: float = 3600) -> list[Path]:
    """POST the prompt to a running ComfyUI, wait for it, download every output image."""
    import urllib.parse
    import urllib.request

    url = url.rstrip("/")
    for role, path in uploads.items():
        name = _upload(url, path)
        for i in nodes_titled(wf, TITLE_TARGET if role == "target" else TITLE_REFERENCE):
            wf[i]["inputs"]["image"] = name
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
    written = []
    for node_out in entry.get("outputs", {}).values():
        for img in node_out.get("images", []):
            query = urllib.parse.urlencode({k: img.get(k, "") for k in ("filename", "subfolder", "type")})
            sub = "previews" if img.get("type") == "temp" else ""
            dest = out_dir / sub / img["filename"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(f"{url}/view?{query}", timeout=120) as r, open(dest, "wb") as fh:
                shutil.copyfileobj(r, fh)
            written.append(dest)
    return written


def _upload(url: str, path: Path) -> str:
    import urllib.request

    boundary = uuid.uuid4().hex
    data = Path(path).read_bytes()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{Path(path).name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/upload/image", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        info = json.loads(r.read())
    return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]
