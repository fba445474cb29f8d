"""A Conv2d that runs float32 on the CPU as im2col + one GEMM instead of through oneDNN.

torch hands a batch-1 convolution whose input holds more than 20,480 values to oneDNN, which
runs the pose branch's 1280-channel convolutions at 8x8 several times slower than torch's
own im2col + BLAS path ("thnn"); that path is also nearer a float64 reference.
``dense-face bench pose-branch`` measures both side by side, per layer shape and on the whole
branch. Other devices and dtypes keep ``F.conv2d`` (cuDNN chooses its own algorithm). The
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
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and conv.weight.dtype == torch.float32 and conv.groups == 1 and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


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
