"""Training captions with the identity placeholder ``*`` in place of the subject word.

The authors' ``tutorial_dataset.py`` (DSF) keeps a caption only if it names its subject
with a gendered/role word (man, woman, boy, girl, player, officer, soldier, ...) and
replaces that word with ``*``, so the identity token takes the subject's place in the
sentence. They replace substrings ("man" inside "woman", "batman"); here whole words
are matched, only singular subjects count (a caption about "two men" does not describe
one identity), and the first mention is replaced. From the authors' caption files
(several captioners, each with a CLIP score) the best-scoring usable caption wins;
captioner junk (BLIP's "arafed", GIT's "[ unused0 ]" name slots) is cleaned or skipped.

The paper keeps, of the captions several captioners wrote, the three with the highest CLIP
scores: :func:`rank_captions` keeps the ``top_k`` best that the subject rule can use (a
caption naming only a celebrity cannot carry ``*``), :func:`choose_captions` records them.
The models themselves (captioners, the CLIP scorer) are in :mod:`train.caption_models`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

PLACEHOLDER = "*"
TEMPLATE = "a photo of * ."
TOP_K = 3  # the paper keeps the three captions with the highest CLIP scores
# Singular subject words, most specific first (the authors' list plus common synonyms).
SUBJECT_WORDS = (
    "woman", "man", "girl", "boy", "lady", "gentleman", "guy", "person", "actress", "actor",
    "player", "officer", "soldier", "teenager", "kid", "child", "he", "she",
)
_SUBJECT_RE = re.compile(r"\b(" + "|".join(SUBJECT_WORDS) + r")\b", re.IGNORECASE)
_ARTIFACTS_RE = re.compile(r"\b(arafed|araffe|arafe|araf|arrafed)\s+", re.IGNORECASE)
_JUNK_RE = re.compile(r"\[\s*unused\d*\s*\]|##", re.IGNORECASE)
_MAX_WORDS = 40


def to_placeholder_caption(text: str) -> str | None:
    """``text`` with its first subject word replaced by ``*``, or None if it has none (or is junk)."""
    if not isinstance(text, str):
        return None
    t = " ".join(text.strip().split())
    if not t or _JUNK_RE.search(t) or len(t.split()) > _MAX_WORDS or PLACEHOLDER in t:
        return None
    if _ARTIFACTS_RE.search(t):  # BLIP's "arafed man" means "a man"
        t = _ARTIFACTS_RE.sub("a ", t)
        t = re.sub(r"\b(a|an|the)\s+(a|an|the)\b", r"\2", t, flags=re.IGNORECASE)
        t = re.sub(r"\ba\s+(?=[aeiou])", "an ", t)
    m = _SUBJECT_RE.search(t)
    if m is None:
        return None
    return t[:m.start()] + PLACEHOLDER + t[m.end():]


def best_caption(candidates: dict[str, float]) -> tuple[str, str] | None:
    """(placeholder caption, original) of the best-scoring usable candidate, ties by text."""
    ranked = sorted(candidates.items(), key=lambda kv: (-float(kv[1]), kv[0]))
    for text, _score in ranked:
        out = to_placeholder_caption(text)
        if out is not None:
            return out, text
    return None


def read_caption_candidates(path: Path) -> list[dict]:
    """Candidates ``{text, score, model}`` of one caption file: the authors' ``captions/*.json``
    ({caption: {"model", "CLIP_score"}}), a JSON list, or a ``.txt`` with one caption per line.

    A ``.txt`` (or a JSON list) has no scores: its order is its ranking (score ``-i``).
    Unreadable files give no candidates: captions are never a reason to drop an image.
    """
    try:
        if path.suffix.lower() == ".txt":
            lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
            return [{"text": ln, "score": float(-i), "model": None} for i, ln in enumerate(lines)]
        data = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return []
    if isinstance(data, list):
        return [{"text": str(t), "score": float(-i), "model": None} for i, t in enumerate(data)]
    out = []
    if isinstance(data, dict):
        for text, info in data.items():
            score = info.get("CLIP_score", 0.0) if isinstance(info, dict) else info
            model = info.get("model") if isinstance(info, dict) else None
            try:
                score = float(score)
            except (TypeError, ValueError):
                score = 0.0
            out.append({"text": str(text), "score": score, "model": None if model is None else str(model)})
    return out


def read_caption_file(path: Path) -> dict[str, float]:
    """``{caption: score}`` of one caption file (see :func:`read_caption_candidates`)."""
    return {c["text"]: c["score"] for c in read_caption_candidates(path)}


def rank_captions(candidates: list[dict], top_k: int = TOP_K) -> list[dict]:
    """The ``top_k`` best candidates that the subject rule can use, best first.

    Candidates are ``{text, score, model}``, ranked by score (higher first, ties by text);
    unscored ones (``score`` None) follow in their given order. Each kept entry gains
    ``caption``, its text with the subject replaced by ``*``. Captions without a singular
    subject word (e.g. a celebrity's name only) cannot carry the identity token, so they
    are passed over rather than counted among the k.
    """
    order = sorted(enumerate(candidates), key=lambda ic: (
        ic[1]["score"] is None, -(ic[1]["score"] or 0.0), ic[1]["text"] if ic[1]["score"] is not None else "", ic[0]))
    kept = []
    for _, c in order:
        placeholder = to_placeholder_caption(c["text"])
        if placeholder is None:
            continue
        kept.append({"caption": placeholder, "text": c["text"], "score": c["score"], "model": c.get("model")})
        if len(kept) >= top_k:
            break
    return kept


def _record(kept: list[dict], source: str) -> dict:
    best = kept[0]
    return {"caption": best["caption"], "caption_original": best["text"], "caption_source": source,
            "caption_model": best["model"], "caption_score": best["score"], "captions": kept}


def choose_captions(caption_files: list[Path], extra=(), generated=(), top_k: int = TOP_K) -> dict:
    """The captions of one image: the first caption file with a usable caption, else the CSV
    texts, else the captioners' ``generated`` candidates, else :data:`TEMPLATE`.

    Returns ``caption`` (the training caption, with ``*``), ``caption_original``,
    ``caption_source`` (``file:<name>``, ``csv``, ``captioner`` or ``template``),
    ``caption_model``, ``caption_score`` and ``captions`` (the kept top k, best first).
    """
    for path in caption_files:
        kept = rank_captions(read_caption_candidates(Path(path)), top_k)
        if kept:
            return _record(kept, f"file:{Path(path).name}")
    for text in extra:
        got = to_placeholder_caption(text)
        if got:
            return _record([{"caption": got, "text": text, "score": None, "model": "csv"}], "csv")
    kept = rank_captions(list(generated), top_k)
    if kept:
        return _record(kept, "captioner")
    return {"caption": TEMPLATE, "caption_original": None, "caption_source": "template", "caption_model": None,
            "caption_score": None, "captions": []}


def caption_for(caption_files: list[Path], extra: list[str] = (), captioner=None,
                image=None) -> dict:
    """Pick the caption for one image: caption files, then extra texts (a CSV column),
    then the captioner (if any), then :data:`TEMPLATE`. Returns caption, original, source."""
    generated = []
    if captioner is not None and image is not None and choose_captions(caption_files, extra)["caption_source"] \
            == "template":
        generated = [{"text": captioner(image), "score": None, "model": getattr(captioner, "name", None)}]
    got = choose_captions(caption_files, extra, generated)
    return {k: got[k] for k in ("caption", "caption_original", "caption_source")}


from .caption_models import LocalCaptioner  # noqa: E402,F401 (re-exported: the builder's --captioner)
