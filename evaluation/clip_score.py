"""CLIP-T / CLIP-I: cosine of a transformers ``CLIPModel``'s projected image and text (or reference-image) embeddings."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..dense_face_core.errors import MissingModelError
from ..dense_face_core.images import read_image, to_rgb_uint8
from .stats import cosine


class ClipScorer:
    """A transformers ``CLIPModel`` + processor from a local folder (``save_pretrained`` layout)."""

    def __init__(self, folder: str | os.PathLike, device: str | None = None):
        import torch
        from transformers import AutoProcessor, CLIPModel

        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise MissingModelError(f"--clip: {folder} is not a transformers CLIP model folder (no config.json); "
                                    f"give a local copy of e.g. openai/clip-vit-large-patch14")
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval().to(self.device)
        self.processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        self.name = folder.name

    def _features(self, out) -> np.ndarray:
        # transformers < 5 returns the projected tensor, >= 5 an output whose pooler_output is it
        t = out if self.torch.is_tensor(out) else out.pooler_output
        t = self.torch.nn.functional.normalize(t.float(), dim=-1)
        return t.cpu().numpy()

    def image_features(self, images: Sequence) -> np.ndarray:
        """(N, D) unit image embeddings; images are RGB arrays or file paths."""
        arrays = [to_rgb_uint8(read_image(i) if isinstance(i, (str, os.PathLike)) else i) for i in images]
        inputs = self.processor(images=arrays, return_tensors="pt")
        with self.torch.inference_mode():
            out = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
        return self._features(out)

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) unit text embeddings (CLIP's 77-token limit, longer prompts truncated)."""
        tok = self.processor.tokenizer
        inputs = tok(list(texts), padding=True, truncation=True, max_length=min(77, tok.model_max_length),
                     return_tensors="pt")
        with self.torch.inference_mode():
            out = self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()})
        return self._features(out)

    def clip_t(self, image, text: str) -> float:
        """CLIP-T: cosine(image embedding, text embedding)."""
        return cosine(self.image_features([image])[0], self.text_features([text])[0])

    def clip_i(self, image, reference) -> float:
        """CLIP-I: cosine(image embedding, reference image embedding)."""
        feats = self.image_features([image, reference])
        return cosine(feats[0], feats[1])
