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
    """Exit code of ``body()``; a DenseFaceError becomes one line on stderr (2), Ctrl-C a note (130), a
    closed stdout pipe a quiet stop (141, as for SIGPIPE).

    Users of the command line see the actionable message, not a stack trace.
    """
    import sys

    try:
        code = int(body() or 0)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except DenseFaceError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other shell tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
