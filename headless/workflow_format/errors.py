"""The one error the conversions raise, so callers can tell a bad workflow from a bug."""
from __future__ import annotations


class WorkflowFormatError(ValueError):
    """The workflow cannot be converted (unknown node type, malformed links, ...)."""
