"""Exceptions with messages meant for the person at the ComfyUI canvas or the shell."""


class DenseFaceError(Exception):
    """Base class: the message names the input and what was expected."""


class DenseFaceInputError(DenseFaceError, ValueError):
    """A value or image the user passed is unusable."""


class NoFaceError(DenseFaceInputError):
    """No face was found where one is required."""


class MissingModelError(DenseFaceError, FileNotFoundError):
    """A model file is absent; the message says which file, which folder, and where to get it."""


class WeightFileError(DenseFaceError, ValueError):
    """A Dense-Face weight file is corrupted, incomplete, or for another base model."""
