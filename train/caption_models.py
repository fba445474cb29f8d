"""The builder's caption models: transformers captioners and a CLIP scorer, from local folders only.

Never downloaded: every load passes ``local_files_only`` with the hub switched off, and a
missing folder is a one-line error naming the option. Both run batched (one forward for
a batch of crops, on the GPU when given ``device="cuda"``) and decode greedily, so the
same batch on the same device gives the same captions and scores in any process.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Task prompts of captioners that need one (Florence-2 does nothing without its task token).
DEFAULT_PROMPTS = {"florence2": "<CAPTION>"}
SCORE_DECIMALS = 4


def local_model_folder(path, option: str, what: str) -> Path:
    """``path`` as a folder holding a transformers model, else a MissingModelError naming ``option``."""
    from ..dense_face_core.errors import MissingModelError

    p = Path(path).expanduser()
    if not (p.is_dir() and (p / "config.json").is_file()):
        raise MissingModelError(f"{option}: {p} is not a folder with a transformers {what} (config.json, "
                                "weights, processor files); models are never downloaded, save one there first")
    return p


def resolve_device(device: str | None) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _quiet_transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _as_images(images):
    """(H, W, 3) -> ([PIL], True); (N, H, W, 3) or a list -> ([PIL...], False)."""
    from PIL import Image

    single = isinstance(images, np.ndarray) and images.ndim == 3
    arrays = [images] if single else list(images)
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arrays], single


class LocalCaptioner:
    """A transformers image-to-text model (BLIP, BLIP-2, GIT, Florence-2, vision-encoder-decoder)
    from a local folder. ``captioner(image)`` gives one caption, ``captioner(batch)`` a list."""

    def __init__(self, path: str, max_new_tokens: int = 30, device: str = "cpu", prompt: str | None = None,
                 option: str = "--captioner"):
        transformers = _quiet_transformers()
        p = local_model_folder(path, option, "image-to-text model")
        self.name, self.path = p.name, p
        kw = {"local_files_only": True}
        cfg = transformers.AutoConfig.from_pretrained(str(p), **kw)
        if cfg.model_type == "vision-encoder-decoder":  # e.g. vit-gpt2: no joint processor
            self.model = transformers.VisionEncoderDecoderModel.from_pretrained(str(p), **kw)
            self.image_processor = transformers.AutoImageProcessor.from_pretrained(str(p), **kw)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(p), **kw)
        else:  # BLIP, BLIP-2, GIT, Florence-2, ...
            auto = (getattr(transformers, "AutoModelForImageTextToText", None)
                    or transformers.AutoModelForVision2Seq)
            self.model = auto.from_pretrained(str(p), **kw)
            processor = transformers.AutoProcessor.from_pretrained(str(p), **kw)
            self.image_processor, self.tokenizer = processor, processor
        self.prompt = prompt if prompt is not None else DEFAULT_PROMPTS.get(cfg.model_type)
        self.device = device
        self.model.to(device).eval()
        self.max_new_tokens = max_new_tokens

    def __call__(self, images):
        import torch

        pil, single = _as_images(images)
        kwargs = {"images": pil, "return_tensors": "pt"}
        if self.prompt:
            kwargs["text"] = [self.prompt] * len(pil)
        inputs = {k: v.to(self.device) for k, v in self.image_processor(**kwargs).items()}
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        texts = [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return texts[0] if single else texts


class ClipScorer:
    """A CLIP model from a local folder: the cosine similarity of each caption to its image
    (the scale of the authors' ``CLIP_score``, about 0.2-0.35 for a fitting caption)."""

    def __init__(self, path: str, device: str = "cpu", option: str = "--clip-model"):
        transformers = _quiet_transformers()
        p = local_model_folder(path, option, "CLIP model")
        self.name, self.path, self.device = p.name, p, device
        self.model = transformers.AutoModel.from_pretrained(str(p), local_files_only=True).to(device).eval()
        self.processor = transformers.AutoProcessor.from_pretrained(str(p), local_files_only=True)
        # CLIP reads at most this many tokens; a tokenizer saved without model_max_length would not cut
        self.max_tokens = int(getattr(getattr(self.model.config, "text_config", None), "max_position_embeddings", 77))

    def score(self, images, texts: list[list[str]]) -> list[list[float]]:
        """``texts[i]`` scored against ``images[i]``; one forward for the whole batch."""
        import torch

        pil, _ = _as_images(images)
        flat = sorted({t for ts in texts for t in ts})
        if not flat:
            return [[] for _ in texts]
        inputs = self.processor(text=flat, images=pil, return_tensors="pt", padding=True, truncation=True,
                                max_length=self.max_tokens)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model(**inputs)
        img = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        txt = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        sims = (img @ txt.T).cpu().numpy()
        col = {t: j for j, t in enumerate(flat)}
        return [[round(float(sims[i, col[t]]), SCORE_DECIMALS) for t in ts] for i, ts in enumerate(texts)]


def configure_torch_threads(threads: int) -> int:
    """Pin torch's CPU threads (the same in every engine: CPU reductions may depend on the count);
    returns the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    return before
