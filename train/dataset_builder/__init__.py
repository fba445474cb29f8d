"""``dense-face build-dataset``: photos of identities -> T2I-Dense-Face training shards.

Per image, one MediaPipe pass gives the 478 landmarks; everything else is derived from
them with the core's single definitions (crop.py's aligned square, the crop's head
pose, dense_targets' parsing and depth), plus an optional ArcFace embedding and a
caption with the identity placeholder ``*``. The shard format is described in
:mod:`train.shards`.

Scaling: the sorted item list is cut into fixed *units* of whole identities
(``--shard-size`` images); a unit is one tar + its index, written atomically, so a run
killed at any moment resumes by skipping units whose index matches (same items, same
settings). ``--shard i/n`` takes every n-th unit, so machines can split the work with no
coordination; the same input and settings give byte-identical shards.

Every image goes through the same stages (``stages``): MediaPipe and crops, optional face
restoration, targets, ArcFace, captioners and CLIP scoring, in fixed chunks of
``--batch-size`` images (``chunks``), on either engine: ``--engine local`` (``pool``, a
process pool) or ``--engine ray`` (``ray_engine``, Ray Data: CPU stages as tasks, model
stages as actor pools). Both write the same bytes.

Files: ``options`` (the command line), ``plan`` (scan the input), ``units`` (pack identities,
fingerprints), ``chunks``, ``decode`` and ``worker`` (one image's CPU work), ``model_set``,
``model_settings`` and ``model_stages`` (the models), ``stages`` (the pipeline), ``pool`` and
``ray_engine`` (the engines), ``shard_writer`` (a unit's tar and index), ``manifest`` (the
totals), ``command`` (the build, ``main``).
"""
from .command import _resolve_insightface, build, landmarker_path, main
from .decode import decode_source, is_grayscale
from .manifest import OUTCOMES, write_manifest
from .options import build_parser
from .plan import Item, Plan, scan_input
from .pool import _run_items
from .shard_writer import finish_unit, sample_key
from .units import Unit, make_units, unit_fingerprint
from .stages import process_chunk, process_item

__all__ = ["OUTCOMES", "Item", "Plan", "Unit", "_resolve_insightface", "_run_items", "build", "build_parser",
           "decode_source", "finish_unit", "is_grayscale", "landmarker_path", "main", "make_units", "process_chunk", "process_item",
           "sample_key", "scan_input", "unit_fingerprint", "write_manifest"]
