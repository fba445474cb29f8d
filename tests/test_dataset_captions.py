"""Captions of the dataset builder: transformers captioners and a CLIP scorer from local folders,
the top k kept with their scores and captioner names, the subject rule afterwards, the authors'
caption files first.

Real captioning and CLIP weights cannot be downloaded here, so the models are tiny random-weight
BLIP, GIT and CLIP networks built from their transformers configs and saved with
``save_pretrained``: they exercise the code path (loading offline, batching, scoring, ranking,
what reaches the shard), not caption quality. Their output layer gets a bias towards one subject
word each, so that their captions are usable by the subject rule and the ranking has something to rank.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import CELEBS, LANDMARKER as TASK, SHARED

pytestmark = [pytest.mark.filterwarnings("ignore:.*without --insightface-model:UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "woman", "with", "hat", "photo",
         "of", "the", "in", "smiling", "[DEC]"]
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}


def _favour(model, word: str) -> None:
    """Push the output layer towards ``word`` (random weights alone rarely write a subject)."""
    import torch

    head = model.get_output_embeddings()
    if head is None:  # BLIP: the decoder's prediction layer
        head = model.text_decoder.get_output_embeddings()
    with torch.no_grad():
        head.bias[WORDS.index(word)] += 8.0


def tiny_blip(folder: Path, word: str = "woman") -> Path:
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor

    try:
        from transformers import BlipImageProcessorPil as ImageProcessor  # no torchvision needed
    except ImportError:
        from transformers import BlipImageProcessor as ImageProcessor
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    cfg = BlipConfig(vision_config=dict(SMALL, image_size=32, patch_size=16),
                     text_config=dict(SMALL, vocab_size=len(WORDS), encoder_hidden_size=32, bos_token_id=15,
                                      pad_token_id=0, sep_token_id=3), projection_dim=32)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(cfg).eval()
    _favour(model, word)
    model.save_pretrained(folder)
    BlipProcessor(ImageProcessor(size={"height": 32, "width": 32}),
                  BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")).save_pretrained(folder)
    return folder


def tiny_git(folder: Path, word: str = "man") -> Path:
    import torch
    from transformers import BertTokenizer, GitConfig, GitForCausalLM, GitProcessor

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    cfg = GitConfig(vision_config=dict(SMALL, image_size=32, patch_size=16), vocab_size=len(WORDS),
                    max_position_embeddings=64, bos_token_id=2, eos_token_id=3, pad_token_id=0, **SMALL)
    torch.manual_seed(1)
    model = GitForCausalLM(cfg).eval()
    _favour(model, word)
    model.save_pretrained(folder)
    GitProcessor(ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                 BertTokenizer(str(folder / "vocab.txt"))).save_pretrained(folder)
    return folder


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def tiny_clip(folder: Path) -> Path:
    """CLIP with a character-level byte BPE vocabulary (no merges)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor
    folder.mkdir(parents=True)
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    cfg = CLIPConfig(text_config=dict(SMALL, vocab_size=514, max_position_embeddings=77, bos_token_id=512,
                                      eos_token_id=513, pad_token_id=513),
                     vision_config=dict(SMALL, image_size=32, patch_size=16), projection_dim=16)
    torch.manual_seed(2)
    CLIPModel(cfg).eval().save_pretrained(folder)
    CLIPProcessor(ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def caption_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("caption_models")
    return {"blip": tiny_blip(root / "blip"), "git": tiny_git(root / "git"), "clip": tiny_clip(root / "clip")}


def caption_input(folder: Path) -> Path:
    """Two identities: one photo with a caption file beside it, two without."""
    a, b = folder / "alice", folder / "bob"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    photos = sorted((CELEBS / "Oprah_Winfrey").glob("*.jpg"))[:2] + sorted((CELEBS / "Yann_LeCun").glob("*.jpg"))[:1]
    (a / "01.jpg").write_bytes(photos[0].read_bytes())
    (a / "01.txt").write_text("a photo of a woman smiling\n")
    (a / "02.jpg").write_bytes(photos[1].read_bytes())
    (b / "01.jpg").write_bytes(photos[2].read_bytes())
    return folder


def _need_shared():
    if not (CELEBS.is_dir() and TASK.is_file()):
        pytest.skip(f"shared test data or the MediaPipe model not found under {SHARED}")


# ============================================================== ranking on fixed scores

def test_top_k_ranking_on_fixed_scores(tmp_path):
    from dense_face.train.captions import choose_captions, rank_captions

    cands = [{"text": "a man in a hat", "score": 0.21, "model": "blip"},
             {"text": "Barack Obama at a podium", "score": 0.40, "model": "git"},   # no subject word
             {"text": "a woman smiling", "score": 0.33, "model": "git"},
             {"text": "a smiling man", "score": 0.33, "model": "blip"},             # tie: text order
             {"text": "two men talking", "score": 0.50, "model": "florence2"},      # plural: not one identity
             {"text": "a boy with a ball", "score": 0.05, "model": "blip2"}]
    kept = rank_captions(cands, 3)
    assert [(c["text"], c["score"], c["model"]) for c in kept] == [
        ("a smiling man", 0.33, "blip"), ("a woman smiling", 0.33, "git"), ("a man in a hat", 0.21, "blip")]
    assert [c["caption"] for c in kept] == ["a smiling *", "a * smiling", "a * in a hat"]
    assert len(rank_captions(cands, 10)) == 4 and rank_captions(cands, 1) == kept[:1]
    # the authors' caption file (several captioners with CLIP scores) wins over generated captions
    f = tmp_path / "x.json"
    f.write_text(json.dumps({"a man on stage": {"model": "blip", "CLIP_score": 0.25},
                             "a person in a suit": {"model": "git", "CLIP_score": 0.31},
                             "a crowd": {"model": "ofa", "CLIP_score": 0.9}}))
    got = choose_captions([f], [], cands, top_k=3)
    assert got["caption_source"] == "file:x.json" and got["caption"] == "a * in a suit"
    assert [(c["model"], c["score"]) for c in got["captions"]] == [("git", 0.31), ("blip", 0.25)]
    got = choose_captions([], [], cands, top_k=2)
    assert got["caption_source"] == "captioner" and got["caption_model"] == "blip" and len(got["captions"]) == 2
    assert choose_captions([], [], [{"text": "a crowd", "score": 1.0, "model": "x"}])["caption_source"] == "template"


# ============================================================== the models, offline

def test_models_load_offline_and_batch(caption_models, tmp_path):
    from dense_face.dense_face_core.errors import MissingModelError
    from dense_face.train.caption_models import ClipScorer, LocalCaptioner

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    for name in ("blip", "git"):
        cap = LocalCaptioner(str(caption_models[name]))
        batch = cap(imgs)
        assert cap.name == name and len(batch) == 3 and all(isinstance(t, str) and t for t in batch)
        assert cap(imgs[1]) == batch[1]  # a batch of one gives the same caption
    clip = ClipScorer(str(caption_models["clip"]))
    texts = [["a man", "a woman with a hat"], ["a man"], []]
    scores = clip.score(imgs, texts)
    assert [len(s) for s in scores] == [2, 1, 0] and all(-1 <= v <= 1 for s in scores for v in s)
    assert clip.score(imgs[1:2], [["a man"]])[0][0] == pytest.approx(scores[1][0], abs=2e-4)
    assert scores[0][0] != scores[0][1]
    with pytest.raises(MissingModelError, match="--captioner: .* never downloaded"):
        LocalCaptioner(str(tmp_path / "nowhere"))
    with pytest.raises(MissingModelError, match="--clip-model"):
        ClipScorer(str(tmp_path))


# ============================================================== through the builder

def _build(args) -> dict:
    from dense_face.train.dataset_builder import main

    assert main(list(map(str, args)) + ["--landmarker", str(TASK), "--quiet"]) == 0
    return json.loads((Path(args[args.index("--out") + 1]) / "manifest.json").read_text())


def _metas(out: Path) -> dict[str, dict]:
    from dense_face.train import shards as S

    return {key: json.loads(files["meta.json"]) for tar in sorted((out / "shards").glob("*.tar"))
            for key, files in S.iter_shard(tar)}


def test_builder_keeps_top_k_scored_captions(caption_models, tmp_path):
    """Two captioners + CLIP in a build: each photo without a caption file gets the captions the
    models write on its crop, ranked by the CLIP score of that crop; the caption file still wins."""
    _need_shared()
    from dense_face.dense_face_core.landmarker import FaceAnalyzer
    from dense_face.train.caption_models import ClipScorer, LocalCaptioner
    from dense_face.train.captions import rank_captions
    from dense_face.train.dataset_builder import scan_input
    from dense_face.train.dataset_builder.worker import analyze_item

    src = caption_input(tmp_path / "in")
    out = tmp_path / "out"
    args = ["--input", src, "--out", out, "--workers", 1, "--crop-sizes", "256", "--min-crop", 48,
            "--captioner", caption_models["blip"], "--captioner", caption_models["git"],
            "--clip-model", caption_models["clip"], "--captions-top-k", 2, "--batch-size", 2]
    m = _build(args)
    assert m["counts"]["ok"] == 3 and m["settings"]["captioner"] == "blip,git"
    assert m["settings"]["caption_top_k"] == 2 and m["settings"]["clip_model"]["name"] == "clip"
    metas = _metas(out)
    filed = metas["alice/01"]
    assert filed["caption_source"] == "file:01.txt" and filed["caption"] == "a photo of a * smiling"
    assert [c["model"] for c in filed["captions"]] == [None]
    # the same captions and scores, recomputed here on the same crops
    cfg = {"crop_sizes": (256,), "min_crop": 48, "max_pixels": 10**8, "keep_grayscale": False, "tiles": False}
    models = [LocalCaptioner(str(caption_models[n])) for n in ("blip", "git")]
    clip = ClipScorer(str(caption_models["clip"]))
    items = {it.rel: it for it in scan_input(src).items}
    with FaceAnalyzer(str(TASK), max_faces=4) as fa:
        for key, rel in (("alice/02", "alice/02.jpg"), ("bob/01", "bob/01.jpg")):
            crop = analyze_item(items[rel], cfg, fa)["crops"][256]
            texts = [" ".join(mdl(crop).split()) for mdl in models]
            scores = clip.score(crop[None], [texts])[0]
            want = rank_captions([{"text": t, "score": s, "model": mdl.name}
                                  for t, s, mdl in zip(texts, scores, models)], 2)
            meta = metas[key]
            assert meta["caption_source"] == "captioner" and want, texts
            assert [(c["text"], c["model"]) for c in meta["captions"]] == [(c["text"], c["model"]) for c in want]
            assert [c["score"] for c in meta["captions"]] == pytest.approx([c["score"] for c in want], abs=2e-4)
            assert meta["caption"] == want[0]["caption"] and "*" in meta["caption"]
            assert meta["caption_score"] == meta["captions"][0]["score"] >= meta["captions"][-1]["score"]
            assert {c["model"] for c in meta["captions"]} == {"blip", "git"}
    # the same build again (two workers): the same bytes
    again = tmp_path / "again"
    _build([again if a is out else a for a in args] + ["--workers", 2])
    h = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "shards").iterdir()}
    assert h == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (again / "shards").iterdir()}


def test_caption_options_rejected(caption_models, tmp_path):
    from dense_face.train.dataset_builder import main

    (tmp_path / "in" / "p").mkdir(parents=True)
    base = ["--input", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--quiet", "--landmarker", str(TASK)]
    two = ["--captioner", str(caption_models["blip"]), "--captioner", str(caption_models["git"])]
    assert main(base + two) == 2                                        # two captioners, nothing to rank them
    assert main(base + ["--clip-model", str(caption_models["clip"])]) == 2  # CLIP without a captioner
    assert main(base + ["--captioner", str(tmp_path / "none")]) == 2     # missing folder
