"""Dense-Face core: the model pieces and face geometry in plain torch/numpy/OpenCV/MediaPipe.

Everything that the ComfyUI nodes and the trainer must agree on is defined here once.
This package never imports ``comfy`` or ``diffusers``.
"""
