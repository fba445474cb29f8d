"""A run folder's record (``run_summary.json``): what it was generated with, and whether it is done."""
from __future__ import annotations

import json
from pathlib import Path

from ..dense_face_core.io_utils import atomic_write_text
from .plan import RunSpec

RUN_SUMMARY = "run_summary.json"
RUN_WORKFLOW = "workflow_api.json"


def rel_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` where it lies under it (records stay valid when OUT moves), else as is."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def eval_block(spec: RunSpec, args, identities_root: Path) -> dict:
    """The settings a run was made with; a run is only reused when they are the same."""
    return {"identity": spec.identity.name, "reference": rel_path(spec.identity.reference, identities_root),
            "prompt_index": spec.prompt_index, "prompt_template": spec.template, "prompt": spec.prompt,
            "seed": spec.seed, "steps": args.steps, "workflow_requested": args.workflow, "demo": args.demo,
            "pose_override": [args.yaw, args.pitch, args.roll], "target": args.target,
            "models": [args.checkpoint, args.weights, args.id_model]}


def load_run(run_dir: Path) -> dict | None:
    """The run's summary, or None where it has none (never finished) or an unreadable one."""
    try:
        data = json.loads((run_dir / RUN_SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("eval"), dict) else None


def write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write_text(run_dir / RUN_SUMMARY, json.dumps(summary, indent=1) + "\n")


def run_is_done(summary: dict | None, expected: dict, run_dir: Path, retry_failed: bool) -> bool:
    """Finished with the same settings and its images still there (a failure counts unless retried)."""
    if summary is None:
        return False
    mine = summary["eval"]
    if any(mine.get(k) != v for k, v in expected.items()):
        return False
    if summary.get("status") == "failed":
        return not retry_failed
    return summary.get("status") == "ok" and all((run_dir / p).is_file() for p in summary.get("outputs", []))


def _missing_run(spec: RunSpec) -> dict:
    """The record of a planned run that was not generated (counted in the table)."""
    return {"status": "missing", "outputs": [], "eval": {"identity": spec.identity.name, "prompt": spec.prompt,
                                                         "seed": spec.seed, "prompt_index": spec.prompt_index}}


def collect_runs(plan: list[RunSpec] | None, runs_root: Path) -> list[tuple[Path, dict]]:
    """(run folder, summary) of the planned runs (missing ones marked), or of every run under runs_root."""
    if plan is None:
        found = sorted(p.parent for p in runs_root.rglob(RUN_SUMMARY))
        return [(d, s) for d in found if (s := load_run(d)) is not None]
    out = []
    for spec in plan:
        d = runs_root / spec.key
        s = load_run(d)
        if s is None or s["eval"].get("prompt") != spec.prompt or s["eval"].get("seed") != spec.seed:
            s = _missing_run(spec)
        out.append((d, s))
    return out
