"""The ComfyUI side of the pack: how the core's tensors and modules become ComfyUI objects.

Node classes (one folder up) stay thin: inputs, a call into the core or into a piece here,
outputs. What is here speaks ComfyUI's protocols: model folders, IMAGE/MASK tensors, weight
and attention patches, the ControlNet interface, sampler objects, the model cache.
"""

CATEGORY = "Dense-Face"
