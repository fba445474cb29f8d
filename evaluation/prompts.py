"""The prompt list: one template a line, its placeholders, and the text CLIP-T compares with."""
from __future__ import annotations

import os
import re
import string
from pathlib import Path

from ..dense_face_core.errors import DenseFaceInputError

DEFAULT_SUBJECT = "a person"


def read_prompts(path: str | os.PathLike) -> list[str]:
    """Prompt templates, one a line; blank lines and lines starting with '#' are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DenseFaceInputError(f"--prompts: cannot read {path}: {exc}") from exc
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise DenseFaceInputError(f"--prompts: {path} holds no prompt")
    return prompts


def fill_prompt(template: str, identity: str, subject: str = DEFAULT_SUBJECT) -> str:
    """Placeholders: ``{person}`` / ``{subject}`` -> ``subject`` ("a person"), ``{identity}`` -> the folder
    name with '_' as spaces; ``{{`` and ``}}`` are literal braces. Anything else is an error."""
    values = {"person": subject, "subject": subject, "identity": identity.replace("_", " ")}
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name not in values:
            raise DenseFaceInputError(f"--prompts: unknown placeholder {{{name}}} in {template!r} "
                                      f"(known: {', '.join('{' + k + '}' for k in values)})")
    return template.format(**values)


def clip_text(prompt: str) -> str:
    """The text CLIP-T compares with: the prompt, with the identity placeholder word '*' read as 'person'."""
    return re.sub(r"\s+", " ", prompt.replace("*", "person")).strip()
