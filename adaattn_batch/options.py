"""The scheduler's settings (``--retries``, ``--per-server``, timeouts, polling...)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Options:
    retries: int = 2  # further attempts after an execution error or timeout
    per_server: int = 2  # jobs of ours queued on one server at a time
    job_timeout: float = 0.0  # seconds of execution before a job is interrupted (0: none)
    poll: float = 1.0  # seconds between /queue polls, and /history polls without a websocket
    probe_interval: float = 10.0  # seconds between probes of a server that is down
    server_grace: float = 30.0  # how long all servers may be down before the batch stops
    http_timeout: float = 30.0
    websocket: bool = True
    cancel_on_interrupt: bool = False  # on Ctrl-C, also remove our prompts from the servers
    headers: dict[str, str] = field(default_factory=dict)
