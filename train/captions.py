"""Training captions with the identity placeholder ``*`` in place of the subject word.

The authors' ``tutorial_dataset.py`` (DSF) keeps a caption only if it names its subject
with a gendered/role word (man, woman, boy, girl, player, officer, soldier, ...) and
replaces that word with ``*``, so the identity token takes the subject's place in the
sentence. They replace substrings ("man" inside "woman", "batman"); here whole words
are matched, only singular subjects count (a caption about "two men" does not describe
one identity), and the first mention is replaced. From the authors' caption files
(several captioners, each with a CLIP score) the best-scoring usable caption wins;
captioner junk (BLIP's "arafed", GIT's "[ unused0 ]" name slots) is cleaned or skipped.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

PLACEHOLDER = "*"
TEMPLATE = "a photo of * ."
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


def read_caption_file(path: Path) -> dict[str, float]:
    """The authors' ``captions/*.json`` ({caption: {"model", "CLIP_score"}}) or a plain ``.txt``.

    A ``.txt`` holds one caption per line (score 0, so the first usable line wins).
    Unreadable files give no candidates: captions are never a reason to drop an image.
    """
    try:
        if path.suffix.lower() == ".txt":
            lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
            return {ln: -i for i, ln in enumerate(lines)}
        data = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return {}
    out = {}
    if isinstance(data, dict):
        for text, info in data.items():
            score = info.get("CLIP_score", 0.0) if isinstance(info, dict) else info
            try:
                out[str(text)] = float(score)
            except (TypeError, ValueError):
                out[str(text)] = 0.0
    elif isinstance(data, list):
        out = {str(t): -i for i, t in enumerate(data)}
    return out


def caption_for(caption_files: list[Path], extra: list[str] = (), captioner=None,
                image=None) -> dict:
    """Pick the caption for one image: caption files, then extra texts (a CSV column),
    then the captioner (if any), then :data:`TEMPLATE`. Returns caption, original, source."""
    for path in caption_files:
        got = best_caption(read_caption_file(path))
        if got:
            return {"caption": got[0], "caption_original": got[1], "caption_source": f"file:{path.name}"}
    for text in extra:
        got = to_placeholder_caption(text)
        if got:
            return {"caption": got, "caption_original": text, "caption_source": "csv"}
    if captioner is not None and image is not None:
        text = captioner(image)
        got = to_placeholder_caption(text)
        if got:
            return {"caption": got, "caption_original": text, "caption_source": "captioner"}
    return {"caption": TEMPLATE, "caption_original": None, "caption_source": "template"}


class LocalCaptioner:
    """A transformers image-to-text model loaded only from a local folder (never the hub).

    Loaded once per worker process; greedy decoding keeps the builder deterministic.
    """

    def __init__(self, path: str, max_new_tokens: int = 30):
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import transformers

        p = Path(path)
        if not p.is_dir():
            from ..dense_face_core.errors import MissingModelError

            raise MissingModelError(f"--captioner: {p} is not a folder with a transformers "
                                    "image-to-text model (config.json, weights, processor files)")
        cfg = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
        if cfg.model_type == "vision-encoder-decoder":  # e.g. vit-gpt2: no joint processor
            self.model = transformers.VisionEncoderDecoderModel.from_pretrained(str(p), local_files_only=True)
            self.image_processor = transformers.AutoImageProcessor.from_pretrained(str(p), local_files_only=True)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        else:  # BLIP, BLIP-2, GIT, ...
            auto = (getattr(transformers, "AutoModelForImageTextToText", None)
                    or transformers.AutoModelForVision2Seq)
            self.model = auto.from_pretrained(str(p), local_files_only=True)
            processor = transformers.AutoProcessor.from_pretrained(str(p), local_files_only=True)
            self.image_processor, self.tokenizer = processor, processor
        self.model.eval()
        self.max_new_tokens = max_new_tokens

    def __call__(self, image_rgb) -> str:
        import torch
        from PIL import Image

        inputs = self.image_processor(images=Image.fromarray(image_rgb), return_tensors="pt")
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()
