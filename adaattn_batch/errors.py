"""The ways a batch or one of its jobs can fail, each with a one-line message."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BatchError(Exception):
    """A problem with the command line, the workflow, the inputs or the manifest (nothing was run)."""


class DownReason(Enum):
    """Why a server counts as down; the value is what the user reads."""

    REFUSED = "connection refused"
    RESET = "connection reset"
    TIMED_OUT = "timed out"
    MARKED = "marked down"  # the scheduler gave up on it while an attempt was still talking to it
    OTHER = "other"  # see the detail


@dataclass(frozen=True)
class Down:
    reason: DownReason
    detail: str = ""

    def __str__(self) -> str:
        return self.detail if self.reason is DownReason.OTHER else self.reason.value


class ServerDown(OSError):
    """A server does not answer (connection refused, reset or timed out)."""

    def __init__(self, url: str, down: Down):
        super().__init__(f"{url}: {down}")
        self.url = url
        self.down = down


class ServerError(RuntimeError):
    """A server answered, but not as ComfyUI does (an unexpected status or body)."""


class PromptRejected(RuntimeError):
    """``POST /prompt`` answered 400: the workflow failed validation. Retrying cannot help."""

    def __init__(self, message: str, errors: list[dict]):
        super().__init__(message)
        self.errors = errors  # [{node, class_type, type, message, details}]


class AllServersDown(RuntimeError):
    """No server answers any more; the batch stops (the manifest is saved, a rerun resumes)."""
