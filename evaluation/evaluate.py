"""``dense-face eval``: the paper's evaluation protocol (identities x prompts x seeds) through the headless runner.

Generation goes through :mod:`dense_face.runner` (in-process ComfyUI by default, or a
ComfyUI server with ``--comfy-url``), one run folder per identity x prompt x seed under
``OUT/runs``; a finished run is never generated twice, so an interrupted evaluation
resumes where it stopped. Then every result image is measured (face detection, ArcFace
identity cosine, pose error, CLIP-T, CLIP-I, dlib distance; FID over the whole set) and
a table is written: ``eval_table.{csv,md,json}`` (per identity and overall, mean ± std)
and ``eval_images.csv`` (one row per image). Metrics whose models are not supplied are
left out, and the table says why. See docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import string
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..headless import runner as R
from ..dense_face_core.errors import (
    DenseFaceError,
    DenseFaceInputError,
    MissingModelError,
    run_reporting_errors,
)
from ..dense_face_core.io_utils import atomic_open, atomic_write_text
from . import metrics as M

RUN_SUMMARY = "run_summary.json"
RUN_WORKFLOW = "workflow_api.json"
TITLE_RESULT = "Save result"
METRICS = ("face_detected", "id_cos", "id_cos_heldout", "clip_t", "clip_i", "pose_mae", "yaw_err", "pitch_err",
           "roll_err", "dlib_dist", "dlib_match")
METRIC_TEXT = {
    "face_detected": "face detection rate",
    "id_cos": "ArcFace cosine, generated vs the conditioning reference photo",
    "id_cos_heldout": "ArcFace cosine, generated vs the mean embedding of the identity's other photos",
    "clip_t": "CLIP cosine, generated image vs prompt",
    "clip_i": "CLIP cosine, generated image vs reference photo",
    "pose_mae": "mean of |Δyaw|, |Δpitch|, |Δroll| (degrees), target vs measured pose",
    "yaw_err": "|Δyaw| (degrees)", "pitch_err": "|Δpitch| (degrees)", "roll_err": "|Δroll| (degrees)",
    "dlib_dist": "dlib 128-d descriptor distance, generated vs reference photo (< 0.6: same person)",
    "dlib_match": "share of faces with dlib distance < 0.6",
}
DEFAULT_SUBJECT = "a person"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the plan

@dataclass
class Identity:
    name: str
    photos: list[Path]
    reference: Path


@dataclass
class RunSpec:
    identity: Identity
    prompt_index: int
    template: str
    prompt: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.identity.name}/p{self.prompt_index:03d}_s{self.seed}"


def discover_identities(root: str | os.PathLike, reference_index: int = 0) -> list[Identity]:
    """One identity per sub-folder of ``root``; its photos sorted by name, the ``reference_index``-th conditions."""
    root = Path(root)
    if not root.is_dir():
        raise DenseFaceInputError(f"--identities: {root} is not a folder")
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = M.list_images(folder)
        if not photos:
            log(f"identities: {folder.name} has no photos; skipped")
            continue
        if not -len(photos) <= reference_index < len(photos):
            raise DenseFaceInputError(f"--reference-index {reference_index}: {folder.name} has {len(photos)} photo(s)")
        out.append(Identity(folder.name, photos, photos[reference_index]))
    if not out:
        raise DenseFaceInputError(f"--identities: no sub-folder of {root} holds photos (one folder per identity)")
    return out


def read_prompts(path: str | os.PathLike) -> list[str]:
    """Prompt templates, one a line; blank lines and lines starting with '#' are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DenseFaceInputError(f"--prompts: cannot read {path}: {exc}") from exc
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise DenseFaceInputError(f"--prompts: {path} holds no prompt")
    return prompts


def fill_prompt(template: str, identity: str, subject: str = DEFAULT_SUBJECT) -> str:
    """Placeholders: ``{person}`` / ``{subject}`` -> ``subject`` ("a person"), ``{identity}`` -> the folder
    name with '_' as spaces; ``{{`` and ``}}`` are literal braces. Anything else is an error."""
    values = {"person": subject, "subject": subject, "identity": identity.replace("_", " ")}
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name not in values:
            raise DenseFaceInputError(f"--prompts: unknown placeholder {{{name}}} in {template!r} "
                                      f"(known: {', '.join('{' + k + '}' for k in values)})")
    return template.format(**values)


def clip_text(prompt: str) -> str:
    """The text CLIP-T compares with: the prompt, with the identity placeholder word '*' read as 'person'."""
    return re.sub(r"\s+", " ", prompt.replace("*", "person")).strip()


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-3' or a mix ('0-2,10')."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"(-?\d+)-(-?\d+)", part)
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                seeds.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
            else:
                seeds.append(int(part))
    except ValueError as exc:
        raise DenseFaceInputError(f"--seeds: cannot read {text!r} (use e.g. 0,1,2 or 0-3)") from exc
    if not seeds:
        raise DenseFaceInputError("--seeds: no seed given")
    return list(dict.fromkeys(seeds))


def build_plan(identities: list[Identity], prompts: list[str], seeds: list[int], subject: str) -> list[RunSpec]:
    return [RunSpec(ident, i, tpl, fill_prompt(tpl, ident.name, subject), seed)
            for ident in identities for i, tpl in enumerate(prompts) for seed in seeds]


# ---------------------------------------------------------------- generation (through the runner)

def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


class Generator:
    """Runs the workflow once per RunSpec through the runner's RunSession (one ComfyUI for all runs)."""

    def __init__(self, args):
        self.args = args
        self.session = R.RunSession(args.workflow, comfy_url=args.comfy_url, comfyui=args.comfyui,
                                    models_dir=args.models_dir, demo=args.demo, demo_dir=args.demo_dir,
                                    device=args.device, log=log,
                                    model_names={"checkpoint": args.checkpoint, "weights": args.weights,
                                                 "id_model": args.id_model})
        if self.session.demo:
            log("eval: metrics of random weights are meaningless: this run checks the plumbing only.")

    @property
    def wf_path(self) -> Path:
        return self.session.wf_path

    @property
    def demo(self) -> bool:
        return self.session.demo

    @property
    def host(self):
        return self.session.host

    def _namespace(self, prompt, seed):
        a = self.args
        return argparse.Namespace(prompt=prompt, seed=seed, steps=a.steps, yaw=a.yaw, pitch=a.pitch, roll=a.roll)

    def run(self, spec: RunSpec, run_dir: Path) -> dict:
        """Generate one run into ``run_dir``; returns its summary (``run_summary.json``)."""
        images = self.session.images(target=self.args.target, reference=spec.identity.reference)
        inputs_dir = run_dir / "inputs"
        inputs_dir.mkdir(parents=True, exist_ok=True)
        local = {}
        for role, path in images.items():  # a record of exactly what conditioned the run
            local[role] = inputs_dir / f"{role}{Path(path).suffix.lower() or '.png'}"
            shutil.copyfile(path, local[role])
        wf, notes, written = self.session.run(run_dir, local, self._namespace(spec.prompt, spec.seed),
                                              inputs_dir=inputs_dir)
        atomic_write_text(run_dir / RUN_WORKFLOW, json.dumps(wf, indent=1) + "\n")
        return {"workflow": str(self.wf_path), "demo_random_weights": self.demo, "overrides": notes,
                "outputs": [_rel(p, run_dir) for p in written],
                "inputs": {role: _rel(p, run_dir) for role, p in local.items()}}


def _eval_block(spec: RunSpec, args, identities_root: Path) -> dict:
    return {"identity": spec.identity.name, "reference": _rel(spec.identity.reference, identities_root),
            "prompt_index": spec.prompt_index, "prompt_template": spec.template, "prompt": spec.prompt,
            "seed": spec.seed, "steps": args.steps, "workflow_requested": args.workflow, "demo": args.demo,
            "pose_override": [args.yaw, args.pitch, args.roll], "target": args.target,
            "models": [args.checkpoint, args.weights, args.id_model]}


def load_run(run_dir: Path) -> dict | None:
    try:
        data = json.loads((run_dir / RUN_SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("eval"), dict) else None


def run_is_done(summary: dict | None, expected: dict, run_dir: Path, retry_failed: bool) -> bool:
    if summary is None:
        return False
    mine = summary["eval"]
    if any(mine.get(k) != v for k, v in expected.items()):
        return False
    if summary.get("status") == "failed":
        return not retry_failed
    return summary.get("status") == "ok" and all((run_dir / p).is_file() for p in summary.get("outputs", []))


def generate(plan: list[RunSpec], args, runs_root: Path, identities_root: Path) -> None:
    todo = []
    for spec in plan:
        run_dir = runs_root / spec.key
        if not run_is_done(load_run(run_dir), _eval_block(spec, args, identities_root), run_dir, args.retry_failed):
            todo.append(spec)
    log(f"eval: {len(plan)} run(s) planned, {len(plan) - len(todo)} already done, {len(todo)} to generate")
    if not todo:
        return
    gen = Generator(args)
    started = time.time()
    first_errors: list[str] = []
    for n, spec in enumerate(todo, 1):
        run_dir = runs_root / spec.key
        if run_dir.exists():  # a run left half-done, or made with other settings: start it afresh
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        log(f"[{n}/{len(todo)}] {spec.key}: {spec.prompt!r} seed {spec.seed}")
        t0 = time.time()
        block = _eval_block(spec, args, identities_root)
        try:
            summary = gen.run(spec, run_dir)
            summary.update(status="ok")
        except (MissingModelError, DenseFaceInputError):
            raise  # configuration: every run would fail the same way
        except DenseFaceError as exc:
            summary = {"workflow": str(gen.wf_path), "demo_random_weights": gen.demo, "outputs": [],
                       "status": "failed", "error": str(exc)}
            log(f"    FAILED: {exc}")
            first_errors.append(str(exc))
            if len(first_errors) == 3 and n == 3 and len(set(first_errors)) == 1:
                raise DenseFaceError(f"the first 3 runs failed the same way, stopping: {exc}")
        summary.update(eval=block, seconds=round(time.time() - t0, 2))
        atomic_write_text(run_dir / RUN_SUMMARY, json.dumps(summary, indent=1) + "\n")
        done = time.time() - started
        log(f"    {summary['status']} in {time.time() - t0:.1f}s; about {done / n * (len(todo) - n) / 60:.1f} min left")
    if gen.host is not None:  # hand the memory to the metric models
        import comfy.model_management as mm

        mm.unload_all_models()
        mm.soft_empty_cache()


# ---------------------------------------------------------------- which files to measure

def _source(wf: dict, link) -> tuple[str, dict] | tuple[None, None]:
    if isinstance(link, list) and link and str(link[0]) in wf:
        return str(link[0]), wf[str(link[0])]
    return None, None


def result_save_nodes(wf: dict) -> list[str]:
    """The SaveImage node(s) holding the result: titled 'Save result', fed by Paste Back, or the only one."""
    saves = R.nodes_of(wf, "SaveImage")
    titled = [s for s in saves if wf[s].get("_meta", {}).get("title") == TITLE_RESULT]
    if titled:
        return titled
    pasted = [s for s in saves if (_source(wf, wf[s]["inputs"].get("images"))[1] or {}).get("class_type")
              == "DenseFacePasteBack"]
    if pasted:
        return pasted
    if len(saves) == 1:
        return saves
    raise DenseFaceInputError(f"cannot tell which of the workflow's {len(saves)} SaveImage nodes holds the result: "
                              f"title it '{TITLE_RESULT}'")


def saved_files(outputs: list[str], prefix: str) -> list[str]:
    """The files a SaveImage with ``prefix`` wrote (``prefix_00001_.png`` ...), in batch order."""
    pat = re.compile(re.escape(Path(prefix).name) + r"_(\d+)_?\.png$")
    hits = []
    for rel in outputs:
        p = Path(rel)
        if "previews" in p.parts:
            continue
        m = pat.fullmatch(p.name)
        if m:
            hits.append((int(m.group(1)), rel))
    return [rel for _, rel in sorted(hits)]


def _saved_image_of(wf: dict, link, run_dir: Path, summary: dict) -> Path | None:
    """The file holding the image on ``link``: a loaded photo (by role) or a SaveImage of the same output."""
    _, node = _source(wf, link)
    if node is None:
        return None
    if node["class_type"] == "LoadImage":
        title = node.get("_meta", {}).get("title")
        role = {R.TITLE_TARGET: "target", R.TITLE_REFERENCE: "reference"}.get(title)
        rel = summary.get("inputs", {}).get(role) if role else None
        return run_dir / rel if rel else None
    for s in R.nodes_of(wf, "SaveImage"):
        if wf[s]["inputs"].get("images") == link or [str(x) for x in wf[s]["inputs"].get("images", [])] == \
                [str(x) for x in link]:
            files = saved_files(summary.get("outputs", []), wf[s]["inputs"].get("filename_prefix", ""))
            if files:
                return run_dir / files[0]
    return None


def pose_targets(wf: dict, run_dir: Path, summary: dict, analyzer, count: int) -> tuple[list[dict | None], str]:
    """The pose each result image was asked for, and where it came from.

    Pose grid: its yaw x pitch grid (row by row, the batch order). Pose Image node: numbers
    set on it (``--yaw/--pitch/--roll``), or, where it is linked to the face crop's detected
    angles, the pose of the face our estimator measures in the image that crop node read
    (the base image of the personalisation workflow, the target photo of face swap).
    """
    from ..dense_face_core.pose import pose_grid

    grids = R.nodes_of(wf, "DenseFacePoseGrid")
    if grids:
        g = wf[grids[0]]["inputs"]
        keys = ("yaw_from", "yaw_to", "yaw_steps", "pitch_from", "pitch_to", "pitch_steps", "roll")
        if not all(isinstance(g.get(k), (int, float)) for k in keys):
            return [None] * count, "pose grid inputs are linked, not numbers"
        poses = [{"yaw": y, "pitch": p, "roll": float(g["roll"])}
                 for y, p in pose_grid(*(g[k] for k in keys[:6]))]
        if len(poses) != count:
            return [None] * count, f"pose grid has {len(poses)} poses but {count} result images"
        return poses, "pose grid"
    eulers = R.nodes_of(wf, "DenseFacePoseEuler")
    if not eulers:
        return [None] * count, "no pose node in the workflow"
    inputs = wf[eulers[0]]["inputs"]
    target, measured, source = {}, None, []
    for a in M.ANGLES:
        v = inputs.get(a)
        if isinstance(v, (int, float)):
            target[a] = float(v)
            source.append(f"{a} set")
            continue
        _, crop = _source(wf, v)
        if crop is None or crop["class_type"] != "DenseFaceCropMask":
            return [None] * count, f"pose input {a} comes from an unknown node"
        if measured is None:
            img_path = _saved_image_of(wf, crop["inputs"].get("image"), run_dir, summary)
            if img_path is None or not img_path.is_file():
                return [None] * count, "the image the pose was detected in was not saved"
            which = crop["inputs"].get("face", "largest")
            which = "largest" if which == "largest" else int(crop["inputs"].get("face_index", 0))
            face = M.largest_face(analyzer, M.read_image(img_path), str(img_path), which)
            if face is None:
                return [None] * count, f"no face in {img_path.name} to take the target pose from"
            measured = M.face_pose(face)
            source.append(f"detected in {img_path.name}")
        target[a] = measured[a]
    return [dict(target)] * count, ", ".join(dict.fromkeys(source))


# ---------------------------------------------------------------- measuring

@dataclass
class Scorers:
    analyzer: object
    arcface: object = None
    clip: object = None
    dlib: object = None
    notes: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)


def _default_arcface(args, demo: bool) -> Path | None:
    """--insightface-model, else the antelopev2 pack in the models folders (the demo's random one in demo mode)."""
    if args.insightface_model:
        return Path(args.insightface_model)
    roots = []
    if args.models_dir:
        roots.append(Path(args.models_dir) / "insightface")
    from ..dense_face_core.model_folders import comfyui_models_dirs

    roots += comfyui_models_dirs("insightface")
    if demo:
        from ..dense_face_core.random_weights import DEMO_ID_PACK

        roots.insert(0, Path(args.demo_dir or R.default_cache_dir() / "demo-models") / "insightface")
        try:
            return M.find_insightface_recognition(DEMO_ID_PACK, roots[:1])
        except MissingModelError:
            pass
    try:
        return M.find_insightface_recognition("antelopev2", roots)
    except MissingModelError:
        return None


def load_scorers(args, demo: bool) -> Scorers:
    from ..dense_face_core.model_folders import comfyui_models_dirs
    from ..dense_face_core.landmarker import FaceAnalyzer, find_landmarker_model

    dirs = ([Path(args.models_dir) / "mediapipe"] if args.models_dir else []) + comfyui_models_dirs("mediapipe")
    landmarker = find_landmarker_model(args.landmarker, dirs)
    sc = Scorers(analyzer=FaceAnalyzer(landmarker), models={"landmarker": str(landmarker)})
    arc = _default_arcface(args, demo)
    if arc is None:
        sc.notes["id_cos"] = "no ArcFace model: give --insightface-model (an .onnx or an insightface pack folder)"
    else:
        sc.arcface = M.ArcFaceIdentity(arc)
        sc.models["arcface"] = str(sc.arcface.path)
        if demo and "RANDOM" in str(sc.arcface.path):
            sc.notes["id_cos"] = "measured with the demo's RANDOM-weight ArcFace stand-in: meaningless"
    if args.clip:
        sc.clip = M.ClipScorer(args.clip)
        sc.models["clip"] = str(args.clip)
    else:
        sc.notes["clip_t"] = sc.notes["clip_i"] = "no CLIP model: give --clip (a local transformers CLIPModel folder)"
    if args.no_dlib:
        sc.notes["dlib_dist"] = "--no-dlib"
    else:
        reason = M.dlib_unavailable_reason(args.dlib_models)
        if reason:
            sc.notes["dlib_dist"] = reason
        else:
            sc.dlib = M.DlibIdentity(args.dlib_models)
            sc.models["dlib"] = str(M.dlib_models_dir(args.dlib_models))
    if "dlib_dist" in sc.notes:
        sc.notes["dlib_match"] = sc.notes["dlib_dist"]
    return sc


class ReferenceCache:
    """Per identity: the reference photo, its ArcFace / dlib / CLIP embeddings, the held-out mean embedding."""

    def __init__(self, scorers: Scorers, identities_root: Path | None):
        self.sc = scorers
        self.root = identities_root
        self.cache: dict = {}

    def get(self, run_dir: Path, summary: dict) -> dict:
        ev = summary["eval"]
        key = (ev["identity"], ev["reference"])
        if key in self.cache:
            return self.cache[key]
        ref_path = None
        if summary.get("inputs", {}).get("reference"):
            ref_path = run_dir / summary["inputs"]["reference"]
        if (ref_path is None or not ref_path.is_file()) and self.root is not None:
            ref_path = self.root / ev["reference"]
        entry = {"path": ref_path, "arcface": None, "heldout": None, "dlib": None, "clip": None}
        if ref_path is not None and ref_path.is_file():
            img = M.read_image(ref_path)
            face = M.largest_face(self.sc.analyzer, img, str(ref_path))
            if face is None:
                log(f"eval: no face in the reference photo {ref_path}; identity metrics of {ev['identity']} skipped")
            else:
                if self.sc.arcface:
                    entry["arcface"] = self.sc.arcface.embed(img, face)
                if self.sc.dlib:
                    entry["dlib"] = self.sc.dlib.descriptor(img, face.box)
            if self.sc.clip:
                entry["clip"] = self.sc.clip.image_features([img])[0]
        if self.sc.arcface and self.root is not None:
            folder = self.root / ev["identity"]
            ref_name = Path(ev["reference"]).name
            others = [p for p in M.list_images(folder) if p.name != ref_name] if folder.is_dir() else []
            entry["heldout"] = M.mean_embedding(self.sc.arcface.embed_photos(self.sc.analyzer, others))
        self.cache[key] = entry
        return entry


def measure_run(run_dir: Path, summary: dict, sc: Scorers, refs: ReferenceCache) -> tuple[list[dict], list[Path]]:
    """One row per result image of a successful run, and the result image paths."""
    ev = summary["eval"]
    wf = json.loads((run_dir / RUN_WORKFLOW).read_text())
    files = [f for s in result_save_nodes(wf) for f in saved_files(summary.get("outputs", []),
                                                                     wf[s]["inputs"].get("filename_prefix", ""))]
    targets, pose_source = pose_targets(wf, run_dir, summary, sc.analyzer, len(files))
    ref = refs.get(run_dir, summary)
    text = clip_text(ev["prompt"])
    text_feat = sc.clip.text_features([text])[0] if sc.clip else None
    rows, paths = [], []
    for k, rel in enumerate(files):
        path = run_dir / rel
        img = M.read_image(path)
        face = M.largest_face(sc.analyzer, img, str(path))
        row = {"identity": ev["identity"], "prompt_index": ev["prompt_index"], "seed": ev["seed"],
               "image": str(path), "prompt": ev["prompt"], "face_detected": 1.0 if face else 0.0,
               "pose_source": pose_source}
        if face is not None:
            row.update({f"measured_{a}": v for a, v in M.face_pose(face).items()})
            if sc.arcface and ref["arcface"] is not None:
                emb = sc.arcface.embed(img, face)
                row["id_cos"] = M.cosine(emb, ref["arcface"])
                if ref["heldout"] is not None:
                    row["id_cos_heldout"] = M.cosine(emb, ref["heldout"])
            if targets[k] is not None:
                row.update({f"target_{a}": v for a, v in targets[k].items()})
                row.update(M.pose_errors(targets[k], M.face_pose(face)))
            if sc.dlib and ref["dlib"] is not None:
                d = sc.dlib.descriptor(img, face.box)
                if d is not None:
                    row["dlib_dist"] = M.DlibIdentity.distance(d, ref["dlib"])
                    row["dlib_match"] = 1.0 if row["dlib_dist"] < M.DLIB_MATCH_THRESHOLD else 0.0
        if sc.clip:
            feat = sc.clip.image_features([img])[0]
            row["clip_t"] = M.cosine(feat, text_feat)
            if ref["clip"] is not None:
                row["clip_i"] = M.cosine(feat, ref["clip"])
        rows.append(row)
        paths.append(path)
    return rows, paths


# ---------------------------------------------------------------- the table

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
            entry[m] = M.summarize(r.get(m) for r in sel)
        table.append(entry)
    return table


def write_outputs(out: Path, table: list[dict], rows: list[dict], fid: dict, notes: dict, settings: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # per image
    cols = ["identity", "prompt_index", "seed", "image", "face_detected"] + [m for m in METRICS if m != "face_detected"]
    extra = sorted({k for r in rows for k in r} - set(cols) - {"prompt"})
    with atomic_open(out / "eval_images.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols + extra + ["prompt"], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    # table CSV
    counts = ["identity", "runs", "failed", "missing", "images", "no_face"]
    with atomic_open(out / "eval_table.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(counts + [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "n")] + ["fid"])
        for e in table:
            vals = [e[c] for c in counts]
            for m in METRICS:
                st = e[m]
                vals += ["" if st.mean is None else f"{st.mean:.6g}", "" if st.std is None else f"{st.std:.6g}", st.n]
            vals.append(f"{fid['value']:.6g}" if e["identity"] == "ALL" and fid.get("value") is not None else "")
            w.writerow(vals)
    # JSON
    data = {"settings": settings, "metrics": METRIC_TEXT, "skipped": notes, "fid": fid,
            "table": [{**{c: e[c] for c in counts}, **{m: e[m].as_dict() for m in METRICS}} for e in table]}
    atomic_write_text(out / "eval_table.json", json.dumps(data, indent=1) + "\n")
    # Markdown
    shown = ["face_detected", "id_cos", "id_cos_heldout", "clip_t", "clip_i", "pose_mae", "dlib_dist", "dlib_match"]
    shown = [m for m in shown if any(e[m].n for e in table)]
    lines = []
    if settings.get("demo_random_weights"):
        lines += [f"> **{R.DEMO_BANNER}** These numbers only show that the evaluation runs.", ""]
    lines += [(f"Workflow `{Path(settings.get('workflow') or '?').name}`; mean ± std (n images); "
               "failed = generation errors, no face = result images without a detected face."), ""]
    head = ["identity", "runs", "failed", "no face"] + shown
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * len(head)) + "|")
    for e in table:
        name = f"**{e['identity']}**" if e["identity"] == "ALL" else e["identity"]
        cells = [name, str(e["runs"]), str(e["failed"] + e["missing"]), f"{e['no_face']}/{e['images']}"]
        cells += [e[m].text(2 if m.endswith(("_mae", "_err")) else 3) for m in shown]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if fid.get("value") is not None:
        lines.append(f"FID (torch-fidelity InceptionV3 {fid['features']}-d, {fid['generated']} generated vs "
                     f"{fid['reference']} reference "
                     f"images): **{fid['value']:.2f}**" + (f" ({fid['warning']})" if fid.get("warning") else ""))
    elif fid.get("reason"):
        lines.append(f"FID: not computed ({fid['reason']})")
    lines.append("")
    lines.append("Metrics: " + "; ".join(f"`{m}` {METRIC_TEXT[m]}" for m in shown) + ".")
    for m, why in notes.items():
        lines.append(f"- `{m}` not reported or caveated: {why}")
    atomic_write_text(out / "eval_table.md", "\n".join(lines) + "\n")


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
            s = {"status": "missing", "outputs": [], "eval": {"identity": spec.identity.name, "prompt": spec.prompt,
                                                              "seed": spec.seed, "prompt_index": spec.prompt_index}}
        out.append((d, s))
    return out


def evaluate(runs: list[tuple[Path, dict]], args, identities_root: Path | None) -> tuple[list[dict], list[Path], dict]:
    demo = any(s.get("demo_random_weights") for _, s in runs)
    sc = load_scorers(args, demo)
    refs = ReferenceCache(sc, identities_root)
    rows, images = [], []
    ok = [(d, s) for d, s in runs if s.get("status") == "ok"]
    t0 = time.time()
    try:
        for n, (d, s) in enumerate(ok, 1):
            r, p = measure_run(d, s, sc, refs)
            rows += r
            images += p
            if n % 10 == 0 or n == len(ok):
                log(f"eval: measured {n}/{len(ok)} run(s) ({time.time() - t0:.0f}s)")
    finally:
        sc.analyzer.close()
    if identities_root is None and sc.arcface:
        sc.notes["id_cos_heldout"] = "--identities not given: the identity's other photos are unknown"
    return rows, images, {"notes": sc.notes, "models": sc.models, "demo": demo}


def compute_fid(images: list[Path], args) -> dict:
    if not args.inception or not args.fid_reference:
        return {"value": None, "reason": "give --inception (InceptionV3 FID weights) and --fid-reference (real images)"}
    reason = M.fid_unavailable_reason()
    if reason:
        return {"value": None, "reason": reason}
    reference = M.list_images(args.fid_reference, recursive=True)
    if len(images) < 2 or len(reference) < 2:
        return {"value": None, "reason": f"too few images ({len(images)} generated, {len(reference)} reference)"}
    log(f"eval: FID over {len(images)} generated and {len(reference)} reference images ...")
    value = M.frechet_inception_distance(images, reference, args.inception, size=args.fid_size,
                                         batch_size=args.fid_batch, features=args.fid_features)
    fid = {"value": value, "generated": len(images), "reference": len(reference), "size": args.fid_size,
           "features": args.fid_features, "weights": str(args.inception)}
    warnings = []
    if args.fid_features != "2048":
        warnings.append(f"{args.fid_features}-d Inception features, not the standard 2048: not comparable with FID")
    if min(len(images), len(reference)) < 2048:
        warnings.append("fewer than 2048 images on a side: FID is biased upward and not comparable across set sizes")
    if warnings:
        fid["warning"] = "; ".join(warnings)
    return fid


# ---------------------------------------------------------------- command

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dense-face eval", description=__doc__.splitlines()[0])
    what = p.add_argument_group("what to generate")
    what.add_argument("--identities", help="folder with one sub-folder of photos per identity")
    what.add_argument("--prompts", help="text file, one prompt a line ({person}, {identity} placeholders; # comments)")
    what.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2 or 0-3 (default 0)")
    what.add_argument("--subject", default=DEFAULT_SUBJECT, help=f"what {{person}} becomes (default {DEFAULT_SUBJECT!r})")
    what.add_argument("--reference-index", type=int, default=0,
                      help="which photo (sorted by name) of each identity conditions the generation (default 0)")
    what.add_argument("--workflow", default="dense_face_personalize", help="as for dense-face run")
    what.add_argument("--target", help="target photo, for workflows that have one (face swap)")
    what.add_argument("--steps", type=int, help="steps of every sampler")
    what.add_argument("--yaw", type=float)
    what.add_argument("--pitch", type=float)
    what.add_argument("--roll", type=float)
    what.add_argument("--checkpoint")
    what.add_argument("--weights")
    what.add_argument("--id-model")
    where = p.add_argument_group("where it runs (as dense-face run)")
    ex = where.add_mutually_exclusive_group()
    ex.add_argument("--comfy-url")
    ex.add_argument("--comfyui")
    where.add_argument("--models-dir")
    where.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                       help="in-process ComfyUI: the GPU when there is one (auto), or the CPU")
    where.add_argument("--demo", choices=("auto", "on", "off"), default="off",
                       help="the random-weight demo set: never (default: evaluating random weights is meaningless), "
                            "always (a plumbing check), or when models are missing")
    where.add_argument("--demo-dir")
    where.add_argument("--generated", help="evaluate the runs already in this folder (an earlier OUT/runs); "
                                           "generate nothing")
    where.add_argument("--generate-only", action="store_true", help="generate the runs, measure nothing")
    where.add_argument("--retry-failed", action="store_true", help="generate runs that failed before again")
    models = p.add_argument_group("metric models (local files; a metric without its model is left out)")
    models.add_argument("--landmarker", help="MediaPipe face_landmarker.task (default: $DENSE_FACE_LANDMARKER or "
                                             "models/mediapipe)")
    models.add_argument("--insightface-model", help="ArcFace for identity: a recognition .onnx or an insightface "
                                                    "pack folder (default: antelopev2 in models/insightface)")
    models.add_argument("--clip", help="local transformers CLIPModel folder, for CLIP-T and CLIP-I")
    models.add_argument("--inception", help="torch-fidelity InceptionV3 weights (.pth state dict or .safetensors)")
    models.add_argument("--fid-reference", help="folder of real images FID compares with")
    models.add_argument("--fid-size", type=int, default=299, help="resize + centre-crop size before Inception "
                                                                  "(0: as they are; default 299)")
    models.add_argument("--fid-batch", type=int, default=32)
    models.add_argument("--fid-features", choices=("64", "192", "768", "2048"), default="2048",
                        help="Inception features FID uses (torch-fidelity's feature_layer_fid; 2048 = standard FID)")
    models.add_argument("--dlib-models", help=f"folder with dlib's .dat files (default: ${M.DLIB_MODELS_ENV} or the "
                                              "face_recognition_models package)")
    models.add_argument("--no-dlib", action="store_true", help="skip the dlib second opinion")
    p.add_argument("--out", required=True, help="output folder (runs/ and the tables)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out).resolve()
    args.fid_size = args.fid_size or None
    identities_root = Path(args.identities).resolve() if args.identities else None
    plan = None
    if args.generated:
        runs_root = Path(args.generated).resolve()
        if not runs_root.is_dir():
            raise DenseFaceInputError(f"--generated: {runs_root} is not a folder")
    else:
        if not args.identities or not args.prompts:
            raise DenseFaceInputError("--identities and --prompts are needed (or --generated to evaluate earlier runs)")
        runs_root = out / "runs"
        plan = build_plan(discover_identities(identities_root, args.reference_index), read_prompts(args.prompts),
                          parse_seeds(args.seeds), args.subject)
        generate(plan, args, runs_root, identities_root)
        if args.generate_only:
            log(f"eval: runs are in {runs_root}; measure them with --generated {runs_root}")
            return 0
    runs = collect_runs(plan, runs_root)
    if not runs:
        raise DenseFaceInputError(f"no runs found under {runs_root}")
    rows, images, info = evaluate(runs, args, identities_root)
    fid = compute_fid(images, args)
    workflows = sorted({s.get("workflow") for _, s in runs if s.get("workflow")})
    settings = {"runs_root": str(runs_root), "identities": str(identities_root) if identities_root else None,
                "prompts": args.prompts, "seeds": args.seeds, "steps": args.steps,
                "workflow": workflows[0] if len(workflows) == 1 else ", ".join(workflows),
                "demo_random_weights": info["demo"], "models": info["models"]}
    table = aggregate(rows, [s for _, s in runs])
    write_outputs(out, table, rows, fid, info["notes"], settings)
    log((out / "eval_table.md").read_text())
    print(f"eval: table written to {out / 'eval_table.md'} (.csv, .json; per image: eval_images.csv)")
    return 0


def _entry() -> int:
    return run_reporting_errors("dense-face eval", main)


if __name__ == "__main__":
    sys.exit(_entry())
