"""A minimal RFC 6455 websocket client over a plain socket: enough for ComfyUI's ``/ws``.

Text messages (ComfyUI's JSON events) are returned whole, fragmented or not; binary ones
(previews) are skipped; pings are answered; a close is answered and ends the connection.
Frames we send are masked, as the RFC requires of clients.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import struct
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 64 * 1024 * 1024  # a guard against a corrupt length, far above any ComfyUI event


class WebSocketError(OSError):
    """The handshake failed, the peer broke the protocol, or the connection closed."""


class HandshakeRefused(WebSocketError):
    """The server answered the upgrade with a plain HTTP status (no websocket there)."""


def mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (masking and unmasking are the same)."""
    if not data:
        return data
    n = len(data)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value a server must return for ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


class WebSocket:
    """One client connection. ``recv`` and ``close`` from one thread; ``send_*`` may come from another."""

    def __init__(self, sock: socket.socket, buffered: bytes = b""):
        self._sock = sock
        self._buf = bytearray(buffered)
        self.closed = False

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> WebSocket:
        """Open ``ws://`` / ``wss://`` ``url`` (``http(s)://`` is accepted too)."""
        parts = urlsplit(url)
        secure = parts.scheme in ("wss", "https")
        host = parts.hostname or "localhost"
        port = parts.port or (443 if secure else 80)
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if secure:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            key = base64.b64encode(os.urandom(16)).decode()
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            netloc = parts.netloc.rpartition("@")[2]
            lines = [f"GET {target} HTTP/1.1", f"Host: {netloc}", "Upgrade: websocket", "Connection: Upgrade",
                     f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]  # fmt: skip
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            head, rest = _read_head(sock)
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            fields = status_line.split(" ", 2)
            if len(fields) < 2 or fields[1] != "101":
                raise HandshakeRefused(f"{url}: no websocket ({status_line.strip() or 'empty answer'})")
            got = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
            if got.get("sec-websocket-accept") != accept_key(key):
                raise WebSocketError(f"{url}: bad Sec-WebSocket-Accept in the handshake")
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest)

    def recv(self, timeout: float | None = None) -> str | None:
        """The next text message, or None when ``timeout`` passes before a frame starts.

        Raises WebSocketError when the connection closes (cleanly or not).
        """
        parts: list[bytes] = []
        kind = None
        while True:
            if not self._buf and not self._fill(timeout):
                if not parts:
                    return None
                continue  # mid-message: keep waiting for the rest
            b0, b1 = self._take(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._take(8))
            if n > MAX_MESSAGE:
                raise WebSocketError(f"frame of {n} bytes is too large")
            key = self._take(4) if b1 & 0x80 else None
            payload = self._take(n)
            if key:
                payload = mask(payload, key)
            if opcode >= 0x8:  # control frames may come between the fragments of a message
                self._control(opcode, payload)
                continue
            if opcode != OP_CONT:
                kind, parts = opcode, []
            parts.append(payload)
            if sum(map(len, parts)) > MAX_MESSAGE:
                raise WebSocketError("message too large")
            if fin:
                if kind == OP_TEXT:
                    return b"".join(parts).decode("utf-8", "replace")
                parts, kind = [], None  # binary: previews, not needed here

    def send_text(self, text: str) -> None:
        self._send(OP_TEXT, text.encode())

    def close(self) -> None:
        """Send a close frame (best effort) and close the socket."""
        if not self.closed:
            self.closed = True
            try:
                self._send(OP_CLOSE, struct.pack(">H", 1000))
            except OSError:
                pass
        try:
            self._sock.close()
        except OSError:
            pass

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            if not self.closed:
                self.closed = True
                try:
                    self._send(OP_CLOSE, payload[:2])
                except OSError:
                    pass
            raise WebSocketError("closed by the server")

    def _send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        key = os.urandom(4)
        self._sock.sendall(head + key + mask(payload, key))

    def _fill(self, timeout: float | None) -> bool:
        """Read more bytes; False on timeout. The first wait uses ``timeout``."""
        self._sock.settimeout(timeout)
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:  # socket.timeout is TimeoutError
            return False
        except OSError as e:
            raise WebSocketError(f"connection lost: {e}") from e
        if not chunk:
            raise WebSocketError("connection closed")
        self._buf += chunk
        return True

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill(30.0):  # a frame has started: its rest must follow promptly
                raise WebSocketError("timed out in the middle of a frame")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise WebSocketError("connection closed during the handshake")
        data += chunk
        if len(data) > 65536:
            raise WebSocketError("handshake answer too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest
