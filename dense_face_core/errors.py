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


def run_reporting_errors(prog: str, body, interrupted: str = "interrupted") -> int:
    """Exit code of ``body()``; a DenseFaceError becomes one line on stderr (2), Ctrl-C a note (130).

    Users of the command line see the actionable message, not a stack trace.
    """
    import sys

    try:
        return int(body() or 0)
    except DenseFaceError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
