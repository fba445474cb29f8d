"""The tables: per identity and overall mean ± std, written as ``eval_table.{csv,json,md}`` and ``eval_images.csv``."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ..dense_face_core.io_utils import atomic_open, atomic_write_text
from .columns import METRIC_TEXT, METRICS
from .markdown_table import markdown_report
from .stats import summarize

COUNTS = ["identity", "runs", "failed", "missing", "images", "no_face"]


def aggregate(rows: list[dict], runs: list[dict]) -> list[dict]:
    """Per identity and 'ALL': run counts and mean ± std of every metric over images (pooled)."""
    names = sorted({r["eval"]["identity"] for r in runs})
    table = []
    for name in names + ["ALL"]:
        sel_runs = [r for r in runs if name == "ALL" or r["eval"]["identity"] == name]
        sel = [r for r in rows if name == "ALL" or r["identity"] == name]
        entry = {"identity": name, "runs": len(sel_runs),
                 "failed": sum(1 for r in sel_runs if r.get("status") == "failed"),
                 "missing": sum(1 for r in sel_runs if r.get("status") == "missing"),
                 "images": len(sel), "no_face": sum(1 for r in sel if not r["face_detected"])}
        for m in METRICS:
            entry[m] = summarize(r.get(m) for r in sel)
        table.append(entry)
    return table


def _g(value) -> str:
    """A number as the CSV files write it (6 significant digits); blank where there is none."""
    return "" if value is None else f"{value:.6g}"


def write_images_csv(path: Path, rows: list[dict]) -> None:
    """One row per result image: the raw values, measured and target angles included."""
    cols = ["identity", "prompt_index", "seed", "image", "face_detected"] + [m for m in METRICS if m != "face_detected"]
    extra = sorted({k for r in rows for k in r} - set(cols) - {"prompt"})
    with atomic_open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols + extra + ["prompt"], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (_g(v) if isinstance(v, float) else v) for k, v in r.items()})


def write_table_csv(path: Path, table: list[dict], fid: dict) -> None:
    """The table as CSV: counts, then mean / std / n of every metric; FID on the ALL row."""
    with atomic_open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COUNTS + [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "n")] + ["fid"])
        for e in table:
            vals = [e[c] for c in COUNTS]
            for m in METRICS:
                vals += [_g(e[m].mean), _g(e[m].std), e[m].n]
            vals.append(_g(fid["value"]) if e["identity"] == "ALL" and fid.get("value") is not None else "")
            w.writerow(vals)


def write_table_json(path: Path, table: list[dict], fid: dict, notes: dict, settings: dict) -> None:
    """The table with everything needed to read it: settings, metric definitions, what was skipped and why."""
    data = {"settings": settings, "metrics": METRIC_TEXT, "skipped": notes, "fid": fid,
            "table": [{**{c: e[c] for c in COUNTS}, **{m: e[m].as_dict() for m in METRICS}} for e in table]}
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def write_outputs(out: Path, table: list[dict], rows: list[dict], fid: dict, notes: dict, settings: dict) -> None:
    """Every output file of the evaluation into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_images_csv(out / "eval_images.csv", rows)
    write_table_csv(out / "eval_table.csv", table, fid)
    write_table_json(out / "eval_table.json", table, fid, notes, settings)
    atomic_write_text(out / "eval_table.md", markdown_report(table, fid, notes, settings))
