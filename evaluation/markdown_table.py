"""``eval_table.md``: the table for people, with the FID line and what each shown metric means."""
from __future__ import annotations

from pathlib import Path

from ..headless import runner as R
from .columns import METRIC_TEXT

SHOWN = ["face_detected", "id_cos", "id_cos_heldout", "clip_t", "clip_i", "pose_mae", "dlib_dist", "dlib_match"]


def _table_lines(table: list[dict], shown: list[str]) -> list[str]:
    """The Markdown table: counts, then mean ± std (n) of every shown metric (angles with 2 digits)."""
    head = ["identity", "runs", "failed", "no face"] + shown
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for e in table:
        name = f"**{e['identity']}**" if e["identity"] == "ALL" else e["identity"]
        cells = [name, str(e["runs"]), str(e["failed"] + e["missing"]), f"{e['no_face']}/{e['images']}"]
        cells += [e[m].text(2 if m.endswith(("_mae", "_err")) else 3) for m in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fid_lines(fid: dict) -> list[str]:
    """The FID value with its set sizes and caveat, or why it was not computed."""
    if fid.get("value") is not None:
        return [f"FID (torch-fidelity InceptionV3 {fid['features']}-d, {fid['generated']} generated vs "
                f"{fid['reference']} reference "
                f"images): **{fid['value']:.2f}**" + (f" ({fid['warning']})" if fid.get("warning") else "")]
    if fid.get("reason"):
        return [f"FID: not computed ({fid['reason']})"]
    return []


def markdown_report(table: list[dict], fid: dict, notes: dict, settings: dict) -> str:
    """The whole Markdown file: a DEMO banner when random weights made the images, the table, FID, the legend."""
    shown = [m for m in SHOWN if any(e[m].n for e in table)]
    lines = []
    if settings.get("demo_random_weights"):
        lines += [f"> **{R.DEMO_BANNER}** These numbers only show that the evaluation runs.", ""]
    lines += [(f"Workflow `{Path(settings.get('workflow') or '?').name}`; mean ± std (n images); "
               "failed = generation errors, no face = result images without a detected face."), ""]
    lines += _table_lines(table, shown)
    lines.append("")
    lines += _fid_lines(fid)
    lines.append("")
    lines.append("Metrics: " + "; ".join(f"`{m}` {METRIC_TEXT[m]}" for m in shown) + ".")
    for m, why in notes.items():
        lines.append(f"- `{m}` not reported or caveated: {why}")
    return "\n".join(lines) + "\n"
