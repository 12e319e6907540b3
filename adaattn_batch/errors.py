"""The ways a batch or one of its jobs can fail, each with a one-line message."""

from __future__ import annotations


class BatchError(Exception):
    """A problem with the command line, the workflow, the inputs or the manifest (nothing was run)."""


class ServerDown(OSError):
    """A server does not answer (connection refused, reset or timed out)."""


class ServerError(RuntimeError):
    """A server answered, but not as ComfyUI does (an unexpected status or body)."""


class PromptRejected(RuntimeError):
    """``POST /prompt`` answered 400: the workflow failed validation. Retrying cannot help."""

    def __init__(self, message: str, errors: list[dict]):
        super().__init__(message)
        self.errors = errors  # [{node, class_type, type, message, details}]


class AllServersDown(RuntimeError):
    """No server answers any more; the batch stops (the manifest is saved, a rerun resumes)."""
