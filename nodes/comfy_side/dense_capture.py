"""Decoder features for the dense head, captured through ComfyUI's own patch points in one forward.

The head reads the outputs of the output blocks in ``FEATURE_TAPS`` (5, 8, 11 for SD1.5/2.1).
ComfyUI calls every ``output_block_patch`` just before output block ``n`` runs, with ``h`` =
the output of block ``n - 1``; the last block has no successor, and its output is exactly
what the UNet's final ``out`` layers receive, so an object patch on ``diffusion_model.out``
(the same layers under the same names, undone by ComfyUI when another model loads) records it. Both patches go on a clone: the model the
user connected is never touched, and patches other packs registered stay in place (the
``out`` wrapper wraps whatever ``out`` is registered).

The forward itself is one model evaluation at the sigma of ``timestep`` through ComfyUI's
sampling pipeline (conditioning, ControlNets such as the pose branch, model management).
"""
from __future__ import annotations

import torch

import comfy.sample
import comfy.samplers

from ...dense_face_core.errors import DenseFaceError


class FeatureCapture:
    """Records ``h`` as it leaves the output blocks in ``blocks``."""

    def __init__(self, blocks, last_block: int):
        self.blocks = frozenset(int(b) for b in blocks)
        self.last_block = int(last_block)
        self.features: dict[int, torch.Tensor] = {}

    def output_block_patch(self, h, hsp, transformer_options):
        block = transformer_options.get("block") or ("", -1)
        if block[0] == "output" and block[1] - 1 in self.blocks:
            self.features[block[1] - 1] = h
        return h, hsp

    def record_last(self, h: torch.Tensor) -> None:
        if self.last_block in self.blocks:
            self.features[self.last_block] = h


class _RecordingOut(torch.nn.Sequential):
    """Stands in for ``diffusion_model.out`` (a Sequential in every SD UNet): the same layers under the same
    names, so weight paths such as ``out.2.weight`` do not change for ComfyUI's weight handling; its input
    (the last block's output) goes to the capture first."""

    def __init__(self, inner: torch.nn.Sequential, capture: FeatureCapture):
        super().__init__(*inner)
        object.__setattr__(self, "capture", capture)  # not a submodule

    @property
    def inner(self) -> torch.nn.Sequential:
        """The plain ``out`` this one records for (built afresh from the shared layers)."""
        return torch.nn.Sequential(*self)

    def forward(self, h):
        self.capture.record_last(h)
        return super().forward(h)


def _model_object(model, name: str):
    """What ``name`` currently is for ``model``, object patches of other packs included."""
    if hasattr(model, "get_model_object"):
        return model.get_model_object(name)
    patched = getattr(model, "object_patches", {}).get(name)
    if patched is not None:
        return patched
    obj = model.model
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _plain_out(model) -> torch.nn.Sequential:
    """The ``out`` layers to record for: a previous capture clone may still be patched in (ComfyUI undoes
    patches when another model loads, not when a run ends); its layers are the original ones."""
    out = _model_object(model, "diffusion_model.out")
    if not isinstance(out, torch.nn.Sequential):
        raise DenseFaceError(f"the UNet's final layers are a {type(out).__name__}, not the SD layout's Sequential; "
                             f"the dense head cannot read this model")
    return out


def capturing_clone(model, blocks) -> tuple[object, FeatureCapture]:
    """A clone of ``model`` that records the outputs of ``blocks`` during every forward."""
    last = len(model.model.diffusion_model.output_blocks) - 1
    capture = FeatureCapture(blocks, last)
    clone = model.clone()
    clone.set_model_output_block_patch(capture.output_block_patch)
    clone.add_object_patch("diffusion_model.out", _RecordingOut(_plain_out(model), capture))
    return clone, capture


def _one_evaluation_sampler():
    """A KSAMPLER whose sampler function evaluates the model once, at the first sigma."""

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))

    return comfy.samplers.KSAMPLER(sample)


def capture_decoder_features(model, samples: torch.Tensor, positive, timestep: int, seed: int,
                             blocks) -> dict[int, torch.Tensor]:
    """Output-block features of one forward of ``model`` on ``samples`` noised to ``timestep``."""
    clone, capture = capturing_clone(model, blocks)
    sigma = _model_object(clone, "model_sampling").sigma(torch.tensor([float(timestep)]))
    sigmas = torch.cat([sigma.reshape(1), torch.zeros(1)]).float()
    noise = comfy.sample.prepare_noise(samples, seed)
    comfy.sample.sample_custom(clone, noise, 1.0, _one_evaluation_sampler(), sigmas, positive, positive, samples,
                               disable_pbar=True, seed=seed)
    missing = sorted(capture.blocks - set(capture.features))
    if missing:
        raise DenseFaceError(f"ComfyUI ran the UNet without reaching output blocks {missing}; the dense head "
                             f"needs an SD1.5/SD2.1-layout UNet")
    features, capture.features = capture.features, {}  # the patched clone may outlive this call
    return features
