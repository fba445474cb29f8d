"""Decoding the dense head's raw outputs into landmarks, a class map and a depth map."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .dense_targets import heatmaps_to_points


@dataclass
class DensePrediction:
    landmarks: np.ndarray   # (B, 478, 2) normalised x, y
    parsing: np.ndarray     # (B, S, S) uint8 class ids
    depth: np.ndarray       # (B, S, S) float32 (MediaPipe z units; meaningful on the face)
    face_mask: np.ndarray   # (B, S, S) bool: parsing != background


def decode_prediction(pred: dict, size: int) -> DensePrediction:
    """Upsample to ``size`` (bilinear logits/depth, so class edges stay smooth) and decode."""
    parsing = F.interpolate(pred["parsing"].float(), size=(size, size), mode="bilinear", align_corners=False)
    depth = F.interpolate(pred["depth"].float(), size=(size, size), mode="bilinear", align_corners=False)
    classes = parsing.argmax(dim=1).to(torch.uint8).cpu().numpy()
    points, _ = heatmaps_to_points(pred["landmarks"].float(), method="centroid")
    return DensePrediction(landmarks=points.astype(np.float32), parsing=classes,
                           depth=depth[:, 0].cpu().numpy().astype(np.float32), face_mask=classes != 0)
