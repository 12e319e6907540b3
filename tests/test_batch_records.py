"""Why a server counts as down travels as a reason and a detail, never as text to be parsed again."""

from __future__ import annotations

import socket

import pytest

from adaattn_batch.client import ComfyClient, describe_failure
from adaattn_batch.errors import Down, DownReason, ServerDown


@pytest.mark.parametrize(
    "error, down",
    [
        (ConnectionRefusedError(), Down(DownReason.REFUSED)),
        (ConnectionResetError(), Down(DownReason.RESET)),
        (TimeoutError(), Down(DownReason.TIMED_OUT)),
        (OSError("No route to host"), Down(DownReason.OTHER, "No route to host")),
    ],
)
def test_failures_become_reasons(error, down):
    assert describe_failure(error) == down


def test_what_the_user_reads():
    assert str(Down(DownReason.REFUSED)) == "connection refused"
    assert str(Down(DownReason.OTHER, "No route to host")) == "No route to host"
    e = ServerDown("http://gpu1:8188", Down(DownReason.TIMED_OUT))
    assert str(e) == "http://gpu1:8188: timed out" and e.down.reason is DownReason.TIMED_OUT


def test_a_closed_port_is_refused():
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerDown) as caught:
        ComfyClient(f"http://127.0.0.1:{port}", timeout=5).queue()
    assert caught.value.down == Down(DownReason.REFUSED) and caught.value.url.endswith(str(port))
