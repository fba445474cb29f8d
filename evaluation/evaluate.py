"""``dense-face eval`` entry point (``python -m dense_face.evaluation.evaluate``), and the harness's names in one place.

The harness lives in small modules: :mod:`.plan` and :mod:`.prompts` (what to generate),
:mod:`.generate` and :mod:`.run_record` (generation through the headless runner, resuming),
:mod:`.outputs` and :mod:`.pose_targets` (which images to measure, against which pose),
:mod:`.scorers`, :mod:`.references` and :mod:`.measure` (the measuring), :mod:`.report`
and :mod:`.markdown_table` (the tables), :mod:`.command` (the parser and ``main``); the
metric functions are in :mod:`.metrics`. Their names are re-exported here for callers
that knew the harness as one module.
"""
from __future__ import annotations

import sys

from . import metrics as M
from .columns import METRIC_TEXT, METRICS
from .command import _entry, build_parser, main, measure_and_report
from .generate import Generator, generate, pending_runs
from .markdown_table import markdown_report
from .measure import compute_fid, evaluate, measure_run
from .messages import log
from .outputs import TITLE_RESULT, linked_node, result_files, result_save_nodes, saved_files, saved_image_of
from .plan import Identity, RunSpec, build_plan, discover_identities, parse_seeds
from .pose_targets import pose_targets
from .prompts import DEFAULT_SUBJECT, clip_text, fill_prompt, read_prompts
from .references import ReferenceCache
from .report import aggregate, write_outputs
from .run_record import RUN_SUMMARY, RUN_WORKFLOW, collect_runs, eval_block, load_run, run_is_done
from .scorers import Scorers, load_scorers

__all__ = [
    "DEFAULT_SUBJECT", "Generator", "Identity", "M", "METRICS", "METRIC_TEXT", "RUN_SUMMARY", "RUN_WORKFLOW",
    "ReferenceCache", "RunSpec", "Scorers", "TITLE_RESULT", "aggregate", "build_parser", "build_plan", "clip_text",
    "collect_runs", "compute_fid", "discover_identities", "eval_block", "evaluate", "fill_prompt", "generate",
    "linked_node", "load_run", "load_scorers", "log", "main", "markdown_report", "measure_and_report", "measure_run",
    "parse_seeds", "pending_runs", "pose_targets", "read_prompts", "result_files", "result_save_nodes",
    "run_is_done", "saved_files", "saved_image_of", "write_outputs",
]

if __name__ == "__main__":
    sys.exit(_entry())
