"""The whole two-mode personalisation run vs a plain txt2img at the same base size and steps.

Full-size SD1.5-shaped models with random weights, built inside an in-process ComfyUI,
driven node by node exactly as ``workflows/dense_face_personalize`` wires them, timed
stage by stage in one process:

- plain:    EmptyLatent -> KSampler (base size, N steps, CFG 7.5) -> VAE decode, timed before
            and after the two-mode run (the mean is the reference);
- two-mode: the same text-editing stage, then face analysis + crop/mask, pose image,
            identity encoding, PC-adapter patch, VAE encode of the crop, latent blend
            sampler (256x256, N steps, CFG 4), VAE decode, paste-back and the dense
            annotation preview.

Random weights render no face, so the face stage runs on scikit-image's astronaut resized
to the base size, standing in for the stage-1 image (the work done is the same). The glue
is everything but the two samplers and the identity encoding: face analysis, crop, the VAE
round trip of the crop, paste-back and the annotation preview. Like ``bench step-overhead``
it runs with steady glibc malloc settings by default (``bench/allocator.py``), and prints the
minor page faults of each stage.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from . import allocator, arguments


class Clock:
    """Seconds and page faults per named stage; ``sync`` (e.g. torch.cuda.synchronize) runs before each
    stage ends so that queued device work is counted in its own stage."""

    def __init__(self, sync=None):
        self.parts: dict[str, float] = {}
        self.faults: dict[str, int] = {}
        self.sync = sync

    def __call__(self, name, fn, *args, **kwargs):
        start, faults = time.perf_counter(), allocator.minor_faults()
        out = fn(*args, **kwargs)
        if self.sync is not None:
            self.sync()
        self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - start
        self.faults[name] = self.faults.get(name, 0) + allocator.minor_faults() - faults
        return out


GLUE = ("face analysis + crop", "pose image", "VAE encode crop", "VAE decode face", "paste-back", "annotations")


def _parse(argv):
    parser = argparse.ArgumentParser(prog="dense-face bench pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="base image size (default 512)")
    parser.add_argument("--steps", type=int, default=20, help="steps of both samplers (default 20)")
    arguments.add_comfyui(parser)
    arguments.add_landmarker(parser)
    allocator.add_argument(parser)
    return parser.parse_args(argv)


class TwoModeRun:
    """Full-size SD1.5-shaped random models in one ComfyUI, and the two stages of a personalisation run."""

    PACK = "bench_random_arcface"

    def __init__(self, args, host=None, models=None, family="sd15", weights_kwargs: dict | None = None):
        """``args``: size, steps, comfyui, landmarker; ``host``: an InProcessComfy to use (default: a new one);
        ``models``: (MODEL, CLIP, VAE) to use (default: full-size SD1.5-shaped random ones); ``family`` and
        ``weights_kwargs``: the Dense-Face random weights' family and options."""
        from ..dense_face_core.face_mode import DenseFaceModel
        from ..dense_face_core.random_weights import build_random_weights, export_random_arcface
        from ..headless import random_sd as rm
        from ..headless.comfy_host import InProcessComfy

        self.args = args
        self.host = host or InProcessComfy(args.comfyui)
        import comfy.ldm.modules.attention as attention

        if args.landmarker:
            os.environ["DENSE_FACE_LANDMARKER"] = args.landmarker
        torch.set_grad_enabled(False)
        if models is None:
            print("building full-size SD1.5-shaped models with random weights ...", file=sys.stderr)
            models = rm.build_unet(seed=0), rm.build_clip(seed=0), rm.build_vae(seed=0)
        self.model, self.clip, self.vae = models
        export_random_arcface(self.host.workdir / "insightface" / "models" / self.PACK / "arcface.onnx")
        self.host.add_model_dir("insightface", self.host.workdir / "insightface")
        kwargs = {"dtype": torch.float16, **(weights_kwargs or {})}  # float16 by default, as users' files are
        self.dense_face = DenseFaceModel(build_random_weights(family, id_embedding_model=f"insightface/{self.PACK}",
                                                              **kwargs))
        self.scene = rm.encode(self.clip, "a detailed, realistic photo of a person wearing a hat on a beach")
        self.negative = rm.encode(self.clip, "cartoon, blurry")
        self.face_negative = rm.encode(self.clip, "")
        self.photo = self.reference = self.astronaut(args.size)
        self.backend = getattr(attention.optimized_attention, "__name__", str(attention.optimized_attention))

    @staticmethod
    def astronaut(size: int, box: tuple[int, int, int, int] | None = None):
        """scikit-image's astronaut (``box``: top, left, bottom, right of it) as a ComfyUI IMAGE of size x size."""
        import skimage.data

        image = skimage.data.astronaut()
        if box is not None:
            image = image[box[0]:box[2], box[1]:box[3]]
        photo = torch.from_numpy(image.copy()).float()[None] / 255.0
        return torch.nn.functional.interpolate(photo.movedim(-1, 1), size=(size, size),
                                               mode="bilinear", antialias=True).movedim(1, -1).clamp(0, 1)

    def text_editing(self, clock: Clock, steps: int):
        import nodes

        size = self.args.size
        latent = nodes.EmptyLatentImage().generate(size, size, 1)[0]
        with torch.inference_mode():
            samples = clock("text-editing sampler", nodes.common_ksampler, self.model, 1, steps, 7.5, "dpmpp_2m",
                            "karras", self.scene, self.negative, latent)[0]
            return clock("text-editing VAE decode", nodes.VAEDecode().decode, self.vae, samples)[0]

    def face_stage(self, clock: Clock, base):
        import nodes

        node, vae = self.host.node, self.vae
        with torch.inference_mode():
            crop, mask, face_crop, yaw, pitch, roll, _preview = clock(
                "face analysis + crop", node("DenseFaceCropMask").crop, base, 256, 0.0, 16.0, 8.0, "largest", 0,
                "error")
            (pose,) = clock("pose image", node("DenseFacePoseEuler").draw, yaw, pitch, roll, 256)
            (face_id,) = clock("identity encoding", node("DenseFaceIDEncoder").encode, self.reference,
                               f"insightface/{self.PACK}", "CPU")
            patched, pos, neg = clock("PC-adapter patch", node("DenseFaceApplyPCAdapter").apply, self.model,
                                      self.clip, self.dense_face, face_id, pose, self.face_negative)
            (latent,) = clock("VAE encode crop", nodes.VAEEncode().encode, vae, crop)
            (out,) = clock("face sampler (256)", node("DenseFaceLatentBlendSampler").sample, patched, pos, neg,
                           latent, mask, 2, self.args.steps, 4.0, "ddpm", "ddim_uniform", 1.0, 0.75, False, "fresh",
                           1.0, False)
            (face,) = clock("VAE decode face", nodes.VAEDecode().decode, vae, out)
            clock("paste-back", node("DenseFacePasteBack").paste, base, face, face_crop, -1.0, mask)
            clock("annotations", node("DenseFaceAnnotationPredict").predict, patched, self.dense_face, out, pos, 50,
                  0, face)


def _timed(name: str, fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(run: TwoModeRun, steps: int, timed=_timed, clock=Clock):
    """Warm-up, then plain txt2img, the two-mode run and plain again; ``timed(name, fn)`` returns the
    seconds of one phase (names: plain_before, two_mode, plain_after), ``clock()`` makes each phase's Clock.
    Returns (two-mode Clock, two-mode s, plain s (mean), (plain s before, its Clock), (after, its Clock))."""
    # warm-up: load every model and grow the heap once so neither side pays first-use costs
    warm = clock()
    run.text_editing(warm, 1)
    run.face_stage(warm, run.photo)
    # plain is timed before and after the two-mode run and averaged, so a slow or fast spell of
    # the machine does not land on one side only
    plain, two, plain_after = clock(), clock(), clock()
    t_plain_before = timed("plain_before", lambda: run.text_editing(plain, steps))
    # the stage-1 image of random weights has no face: the astronaut stands in
    t_two = timed("two_mode", lambda: (run.text_editing(two, steps), run.face_stage(two, run.photo)))
    t_plain_after = timed("plain_after", lambda: run.text_editing(plain_after, steps))
    t_plain = (t_plain_before + t_plain_after) / 2
    return two, t_two, t_plain, (t_plain_before, plain), (t_plain_after, plain_after)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    code = allocator.rerun_steady(__spec__.name, argv, args.allocator)
    if code is not None:
        return code
    run = TwoModeRun(args)
    _report(run, args, *measure(run, args.steps))
    return 0


def _report(run, args, two, t_two, t_plain, before, after) -> None:
    (t_plain_before, plain), (t_plain_after, plain_after) = before, after
    print(f"ComfyUI {run.host.root}; attention backend: {run.backend}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; base {args.size}x{args.size}, {args.steps} steps each sampler; "
          f"{allocator.describe()}")
    print(f"plain txt2img: {t_plain:8.1f} s  (mean of {t_plain_before:.1f} s before and {t_plain_after:.1f} s after "
          f"the two-mode run; sampler page faults {plain.faults['text-editing sampler']}, "
          f"{plain_after.faults['text-editing sampler']})")
    print(f"two-mode run:  {t_two:8.1f} s")
    for name, seconds in two.parts.items():
        print(f"  {name:26s} {seconds:8.2f} s  ({seconds / t_two:6.1%})  {two.faults[name]:>9d} page faults")
    glue = sum(two.parts.get(k, 0.0) for k in GLUE)
    print(f"ratios: two_mode={t_two / t_plain:.3f} glue={glue / t_two:.3f}")


if __name__ == "__main__":
    sys.exit(main())
