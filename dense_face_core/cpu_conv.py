"""A Conv2d that runs float32 on the CPU as im2col + one GEMM instead of through oneDNN where
its weights outweigh its pixels.

torch hands a batch-1 convolution whose input holds more than 20,480 values to oneDNN, which
reorders the weights into its blocked layout on every call: for the pose branch's 1280-channel
layers at 16x16 and 8x8 (59 MB of weights, a few hundred pixels) that costs more than the
convolution, and with glibc's default allocator each reorder buffer is freshly mapped memory.
torch's own im2col + BLAS path ("thnn") reads the weights as they are. It is chosen where the
output has no more pixels than channels (the weights are then larger than the column buffer);
larger images keep oneDNN, which is faster there. ``dense-face bench pose-branch`` measures both
paths side by side, per layer shape and on the whole branch; im2col is also nearer a float64
reference. Other devices and dtypes keep ``F.conv2d`` (cuDNN chooses its own algorithm). The
state-dict keys are nn.Conv2d's, so the authors' weights load unchanged.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

_thnn_conv2d = getattr(torch._C._nn, "thnn_conv2d", None)
try:  # a dispatch mode (FlopCounterMode, FakeTensorMode) expects the ops F.conv2d emits
    from torch.utils._python_dispatch import _get_current_dispatch_mode
except ImportError:  # pragma: no cover - older torch
    _get_current_dispatch_mode = None
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


def uses_im2col(conv: nn.Conv2d, x: Tensor) -> bool:
    """Whether ``conv`` takes the im2col path for ``x``: float32 on the CPU, plain zero padding,
    inference (training keeps ``F.conv2d``: the im2col backward refuses DDP's bucketed gradient
    views), and nobody watching the ops (a dispatch mode, torch.compile) who expects ``F.conv2d``'s."""
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in conv.parameters())):
        return False
    if _thnn_conv2d is None or _get_current_dispatch_mode is None or _get_current_dispatch_mode() is not None:
        return False
    if _is_compiling() or not isinstance(conv, Conv2d):
        return False
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and conv.weight.dtype == torch.float32 and conv.groups == 1 and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)):
        return False
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    out_pixels = ((x.shape[2] + 2 * ph - kh) // sh + 1) * ((x.shape[3] + 2 * pw - kw) // sw + 1)
    return out_pixels <= conv.out_channels  # the weights outweigh the column buffer


class Conv2d(nn.Conv2d):
    """nn.Conv2d with the CPU float32 inference path above."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if uses_im2col(self, input):
            return _thnn_conv2d(input, weight, self.kernel_size, bias, self.stride, self.padding)
        return super()._conv_forward(input, weight, bias)


@contextmanager
def torch_default_convs(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with its Conv2d layers on ``F.conv2d`` for the duration (for benchmarks)."""
    swapped = [m for m in module.modules() if type(m) is Conv2d]
    for m in swapped:
        m.__class__ = nn.Conv2d
    try:
        yield module
    finally:
        for m in swapped:
            m.__class__ = Conv2d
