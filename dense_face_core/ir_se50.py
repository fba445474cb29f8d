"""IR-SE50, the identity network behind the authors' released identity projector.

The authors' features (``feat_file_v2``) come from pSp's ``model_ir_se50.pth``
(``Backbone(112, 50, drop 0.6, 'ir_se')``); their checkpoint carries it as
``id_loss_func.facenet.*``, which ``dense-face convert-official`` extracts. This module
reproduces the architecture and key names exactly so those tensors load 1:1.
"""
from __future__ import annotations

import torch
from torch import nn

_STAGES_50 = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))


class _SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))




class _BottleneckIRSE(nn.Module):
    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            _SEModule(depth, 16),
        )

    def forward(self, x):
        return self.shortcut_layer(x) + self.res_layer(x)


class IRSE50(nn.Module):
    """pSp/TreB1eN ``Backbone(input_size=112, num_layers=50, mode='ir_se')``; output L2-normalised (B, 512)."""

    def __init__(self, drop_ratio: float = 0.6):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(drop_ratio), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512, affine=True))
        modules = []
        for in_channel, depth, units in _STAGES_50:
            modules.append(_BottleneckIRSE(in_channel, depth, 2))
            modules.extend(_BottleneckIRSE(depth, depth, 1) for _ in range(units - 1))
        self.body = nn.Sequential(*modules)
        self.face_pool = nn.AdaptiveAvgPool2d((112, 112))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: RGB in [-1, 1], any size (pooled to 112 like the authors' IDLoss)."""
        x = self.face_pool(x)
        x = self.output_layer(self.body(self.input_layer(x)))
        return nn.functional.normalize(x, dim=1)

    def load_facenet_state_dict(self, state: dict) -> None:
        """Load ``id_loss_func.facenet.*`` tensors (prefix already stripped)."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("face_pool")]
        if missing or unexpected:
            from .errors import WeightFileError

            raise WeightFileError(
                f"IR-SE50 weights do not match the network: {len(missing)} missing "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
