"""The pose branch as a ComfyUI ControlNet.

It rides ComfyUI's own ControlNet class (strength, start/end percent, chaining, model
management) through a wrapper that evaluates it once per distinct (latent, hint, timestep)
row: under CFG the cond and uncond rows are identical and the branch reads no text, so the
result is exact, at half the cost. One CONTROL_NET is made per loaded weight file and kept
beside it (not inside the core object) for as long as that file stays loaded.
"""
from __future__ import annotations

import inspect
import weakref

import torch

import comfy.controlnet
import comfy.model_management

# ComfyUI 2024 merges a flat list of residuals (last = middle); newer builds expect a dict.
_LIST_CONTROL_OUTPUT = "control_input" in inspect.signature(comfy.controlnet.ControlBase.control_merge).parameters


def distinct_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the first occurrence of each distinct batch row, and each row's group.

    A tensor with batch 1 is shared by every row (ComfyUI does not repeat a single hint).
    """
    batch = tensors[0].shape[0]
    firsts: list[int] = []
    group = []
    varying = [t for t in tensors if t.shape[0] != 1]
    for i in range(batch):
        for g, j in enumerate(firsts):
            if all(torch.equal(t[i], t[j]) for t in varying):
                group.append(g)
                break
        else:
            group.append(len(firsts))
            firsts.append(i)
    device = tensors[0].device
    return torch.tensor(firsts, device=device), torch.tensor(group, device=device)


class PoseControlModel(torch.nn.Module):
    """The core pose branch behind ComfyUI's cldm ControlNet interface, computed once per distinct row.

    The hint encoder's output depends on the pose image alone; ComfyUI hands the same hint
    tensor to every step, so it is encoded once and reused (exact).
    """

    def __init__(self, branch: torch.nn.Module):
        super().__init__()
        self.branch = branch
        self.last_unique_rows = None  # for tests and benchmarks: rows evaluated in the last call
        self._hint_cache = None  # (copy of the hint, rows, dtype, encoded hint)

    @property
    def dtype(self) -> torch.dtype:
        return self.branch.dtype

    def _guided_hint(self, hint, rows, dtype):
        cache = self._hint_cache
        if (cache is None or cache[1:3] != (rows, dtype) or cache[0].shape != hint.shape
                or cache[0].device != hint.device or not torch.equal(cache[0], hint)):
            picked = hint if rows is None or hint.shape[0] == 1 else hint[list(rows)]
            self._hint_cache = (hint.clone(), rows, dtype, self.branch.encode_hint(picked, dtype))
        return self._hint_cache[3]

    def forward(self, x, hint, timesteps, context=None, y=None, **kwargs):
        firsts, group = distinct_rows(x, hint, timesteps.reshape(timesteps.shape[0], -1))
        self.last_unique_rows = int(firsts.numel())
        if firsts.numel() == x.shape[0]:
            outs = self.branch(x, hint, timesteps, guided_hint=self._guided_hint(hint, None, x.dtype))
        else:
            pick = lambda t: t if t.shape[0] == 1 else t[firsts]  # noqa: E731
            guided = self._guided_hint(hint, tuple(firsts.tolist()), x.dtype)
            outs = self.branch(x[firsts], pick(hint), pick(timesteps), guided_hint=guided)
            outs = [o.index_select(0, group) for o in outs]  # fresh tensors: ComfyUI scales them in place
        if _LIST_CONTROL_OUTPUT:
            return outs
        return {"middle": outs[-1:], "output": outs[:-1]}


# The dtypes ComfyUI runs SD1.x/SD2.x models in (supported_models_base.BASE), in its order of preference.
_SD_INFERENCE_DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def control_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """The dtype ComfyUI's own ControlNet loader would compute weights of ``weight_dtype`` in on its device:
    float32 on a CPU, float16 on most GPUs, or what the user forced (--fp32-unet, --bf16-unet, ...)."""
    mm = comfy.model_management
    try:
        dtype = mm.unet_dtype(model_params=-1, supported_dtypes=_SD_INFERENCE_DTYPES, weight_dtype=weight_dtype)
    except TypeError:  # ComfyUI 2024 (the call its load_controlnet makes), or another pack's older wrapper
        try:
            dtype = mm.unet_dtype(supported_dtypes=_SD_INFERENCE_DTYPES)
        except TypeError:
            dtype = mm.unet_dtype()
    return mm.unet_manual_cast(dtype, mm.get_torch_device()) or dtype


def pose_controlnet(branch: torch.nn.Module):
    """A ComfyUI CONTROL_NET for the pose branch."""
    return comfy.controlnet.ControlNet(PoseControlModel(branch),
                                       load_device=comfy.model_management.get_torch_device())


_controlnets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pose_branch_for(dense_face) -> torch.nn.Module:
    """A loaded DenseFaceModel's pose branch in the dtype ComfyUI would give a ControlNet file like it: a
    float16 file (the authors' release, every export) runs in float32 on a CPU, where float16 convolutions
    have no fast kernels."""
    return dense_face.pose_branch(control_dtype(dense_face.pose_weight_dtype))


def controlnet_for(dense_face):
    """The one CONTROL_NET of a loaded DenseFaceModel (made on first use, dropped with it)."""
    control = _controlnets.get(dense_face)
    if control is None:
        control = _controlnets[dense_face] = pose_controlnet(pose_branch_for(dense_face))
    return control


def attach_pose(positive, negative, control_net, pose_image, strength, start_percent, end_percent):
    """Attach like the stock Apply ControlNet (Advanced) node, to both positive and negative."""
    import nodes

    return nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control_net, pose_image,
                                                            strength, start_percent, end_percent)
