"""N faces of a group photo in one batched run vs N single-face runs of the same workflow.

The shipped ``workflows/dense_face_group`` runs in one in-process ComfyUI (one executor, so
models stay loaded between runs, as on a server) on the full-size SD1.5-shaped random-weight
demo set, on insightface's group photo ``t1.jpg`` with one reference photo per face:

- batched: the N faces in one run (one face analysis of the photo, one text encoding, the N
  crops in one sampling call, one paste-back);
- serial:  N runs, run i taking face i only (``face = list``, ``face_list = i``) with reference i,
  as a user without the group workflow would, two ways: *cold*, ComfyUI's cache cleared before each
  run (the checkpoint, the loaders and the text encoder run again, as N ``dense-face run`` commands
  would; the pack's own file caches stay), and *warm*, models kept loaded (N prompts queued on one
  server). ``batched_vs_serial`` compares with cold, ``batched_vs_serial_warm`` with warm.

Each side is timed twice, alternating (cold, warm, batched, cold, warm, batched), and the means compared,
so a slow spell of a shared machine does not land on one side only. A warm-up run first loads
every model. Random weights draw no faces; the work done is the same as with real weights.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from . import allocator, arguments


def _parse(argv):
    p = argparse.ArgumentParser(prog="dense-face bench group", description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=6, help="faces of the group photo to re-paint (1..6, default 6)")
    p.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    arguments.add_comfyui(p)
    arguments.add_landmarker(p)
    p.add_argument("--demo-dir", help="where the demo set lives (default: the cache of dense-face run)")
    allocator.add_argument(p)
    args = p.parse_args(argv)
    if not 1 <= args.faces <= 6:
        p.error("--faces: the group photo has six faces; expected 1..6")
    return args


def _references(n: int) -> list[Path]:
    """N different reference photos from the packaged ones, copied under different names when fewer."""
    from ..dense_face_core.packaged_photos import packaged_photo

    photos = [packaged_photo("tom_hanks"), packaged_photo("astronaut")]
    return [photos[i % len(photos)] for i in range(n)]


def _one_face_graph(face: int):
    """The group graph cut down to face ``face`` and one reference (the second reference slot removed)."""
    from ..headless.reference_slots import remove_reference_slot
    from ..headless.workflow_graph import nodes_of

    def edit(wf: dict) -> None:
        for i in nodes_of(wf, "DenseFaceCropMask"):
            wf[i]["inputs"].update(face="list", face_list=str(face))
        remove_reference_slot(wf, 1)
    return edit


def _all_faces(n: int):
    def edit(wf: dict) -> None:
        from ..headless.workflow_graph import nodes_of

        for i in nodes_of(wf, "DenseFaceCropMask"):
            wf[i]["inputs"].update(face="list", face_list=", ".join(str(k) for k in range(n)))
    return edit


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    code = allocator.rerun_steady(__spec__.name, argv, args.allocator)
    if code is not None:
        return code
    import os

    import torch

    from ..dense_face_core.packaged_photos import packaged_photo
    from ..headless.reference_slots import reference_role
    from ..headless.session import RunSession

    if args.landmarker:
        os.environ["DENSE_FACE_LANDMARKER"] = args.landmarker
    session = RunSession("dense_face_group", comfyui=args.comfyui, demo="on", demo_dir=args.demo_dir, device="cpu")
    def overrides(seed: int):  # a new seed every round: no run is a fully cached repeat of an earlier one
        return argparse.Namespace(prompt=None, seed=seed, steps=args.steps, yaw=None, pitch=None, roll=None)
    target, refs = packaged_photo("group"), _references(args.faces)
    tmp = tempfile.TemporaryDirectory(prefix="dense-face-bench-group-")
    out = Path(tmp.name)

    def batched(seed: int) -> float:
        images = {"target": target, **{reference_role(k): r for k, r in enumerate(refs)}}
        t0 = time.perf_counter()
        session.run(out / "batched", images, overrides(seed), edit=_all_faces(args.faces))
        return time.perf_counter() - t0

    def serial(seed: int, cold: bool) -> float:
        t0 = time.perf_counter()
        for face, ref in enumerate(refs):
            if cold:
                session.forget_cached_outputs()
            session.run(out / f"face_{face}", {"target": target, "reference": ref}, overrides(seed + face),
                        edit=_one_face_graph(face))
        return time.perf_counter() - t0

    try:
        print("warm-up (loads every model) ...", file=sys.stderr)
        session.run(out / "warm", {"target": target, "reference": refs[0]}, overrides(1), edit=_one_face_graph(0))
        times = {"cold": [], "warm": [], "batched": []}
        for r in (1, 2):
            times["cold"].append(serial(100 * r, cold=True))
            times["warm"].append(serial(100 * r + 50, cold=False))
            times["batched"].append(batched(100 * r))
    finally:
        session.close()
        tmp.cleanup()
    mean = {k: sum(v) / len(v) for k, v in times.items()}
    runs = lambda k: ", ".join(f"{t:.1f}" for t in times[k])  # noqa: E731
    print(f"ComfyUI {session.host.root}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.faces} faces of t1.jpg at 256x256, {args.steps} steps, CFG 4; {allocator.describe()}")
    print(f"serial, cold ({args.faces} single-face runs, cache cleared): {mean['cold']:8.1f} s  ({runs('cold')})")
    print(f"serial, warm ({args.faces} single-face runs, models kept):   {mean['warm']:8.1f} s  ({runs('warm')})")
    print(f"batched (one run, {args.faces} faces):                        {mean['batched']:8.1f} s  "
          f"({runs('batched')})")
    print(f"ratios: batched_vs_serial={mean['batched'] / mean['cold']:.3f} "
          f"batched_vs_serial_warm={mean['batched'] / mean['warm']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
