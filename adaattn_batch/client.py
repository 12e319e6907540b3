"""One ComfyUI server through its HTTP API (``server.py``), with ``urllib`` only.

Transport failures become ServerDown; a 400 from ``/prompt`` becomes PromptRejected with
every node error; anything else unexpected is a ServerError.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode, urlsplit

from .errors import Down, DownReason, PromptRejected, ServerDown, ServerError

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def normalize_url(url: str) -> str:
    """``host:port`` or ``http://host:port/prefix/`` -> ``http://host:port/prefix`` (no trailing slash)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a server URL: {url!r} (use http://host:port)")
    return url.rstrip("/")


class ComfyClient:
    """HTTP calls to one server. Thread-safe: every call opens its own connection."""

    def __init__(self, url: str, timeout: float = 30.0, headers: dict[str, str] | None = None):
        self.url = normalize_url(url)
        self.timeout = timeout
        self.headers = dict(headers or {})
        host = urlsplit(self.url).hostname
        # A proxy from the environment must not capture a server on this machine.
        handlers = [urllib.request.ProxyHandler({})] if host in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    # ---- transport

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                timeout: float | None = None, tries: int = 3) -> tuple[int, bytes]:  # fmt: skip
        """(status, body). Connection failures are tried ``tries`` times (refusals only, for POST)."""
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        for attempt in range(tries):
            try:
                with self._opener.open(req, timeout=timeout or self.timeout) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", e)
                refused = isinstance(reason, ConnectionRefusedError)
                timed_out = isinstance(reason, (socket.timeout, TimeoutError))
                if attempt + 1 == tries or timed_out or (method != "GET" and not refused):
                    raise ServerDown(self.url, describe_failure(reason)) from e
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def get_json(self, path: str, timeout: float | None = None) -> Any:
        status, data = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ServerError(f"{self.url}{path}: HTTP {status}")
        return _json(data, self.url + path)

    def post_json(self, path: str, payload: Any, tries: int = 3) -> tuple[int, bytes]:
        return self.request("POST", path, json.dumps(payload).encode(), "application/json", tries=tries)

    # ---- ComfyUI endpoints

    def system_stats(self, timeout: float | None = None) -> dict:
        return self.get_json("/system_stats", timeout=timeout)

    def queue(self) -> tuple[list[str], list[str]]:
        """Prompt ids (running, pending) from ``GET /queue``; each item is [number, prompt_id, ...]."""
        body = self.get_json("/queue")
        running, pending = ([str(item[1]) for item in body.get(key) or [] if len(item) > 1]
                            for key in ("queue_running", "queue_pending"))  # fmt: skip
        return running, pending

    def upload(self, data: bytes, name: str, subfolder: str = "", overwrite: bool = True) -> str:
        """``POST /upload/image``; returns the value a LoadImage input takes (``subfolder/name``)."""
        boundary = uuid.uuid4().hex
        fields = {"type": "input", "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        body = _multipart(boundary, fields, "image", name, data)
        status, raw = self.request("POST", "/upload/image", body, f"multipart/form-data; boundary={boundary}")
        if status != 200:
            raise ServerError(f"{self.url}/upload/image: HTTP {status} for {name}")
        got = _json(raw, self.url + "/upload/image")
        stored, folder = got.get("name") or name, got.get("subfolder", subfolder) or ""
        return f"{folder.strip('/')}/{stored}" if folder else stored

    def submit(self, prompt: dict, client_id: str, prompt_id: str | None = None) -> str:
        """``POST /prompt``; returns the prompt id. Validation errors raise PromptRejected."""
        payload: dict[str, Any] = {"prompt": prompt, "client_id": client_id}
        if prompt_id:
            payload["prompt_id"] = prompt_id  # ComfyUI >= 0.3.6x takes our id; older ones mint their own
        status, raw = self.post_json("/prompt", payload)
        body = _json(raw, self.url + "/prompt") if raw else {}
        if status == 400 and prompt_id and (body.get("error") or {}).get("type") == "invalid_prompt_id":
            return self.submit(prompt, client_id, None)
        if status == 400:
            raise rejection(body)
        if status != 200 or not body.get("prompt_id"):
            raise ServerError(f"{self.url}/prompt: HTTP {status} {raw[:200]!r}")
        return str(body["prompt_id"])

    def history(self, prompt_id: str) -> dict | None:
        """The ``/history/<id>`` entry, or None while the prompt has not finished."""
        return self.get_json(f"/history/{quote(prompt_id)}").get(prompt_id)

    def view(self, file: dict, out: BinaryIO, progress: Callable[[bytes], None] | None = None) -> int:
        """Stream one output file (a ``{filename, subfolder, type}`` entry) into ``out``; returns its size."""
        query = urlencode({"filename": file["filename"], "subfolder": file.get("subfolder", ""),
                           "type": file.get("type", "output")})  # fmt: skip
        req = urllib.request.Request(f"{self.url}/view?{query}", headers=self.headers)
        size = 0
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
                    if progress:
                        progress(chunk)
        except urllib.error.HTTPError as e:
            raise ServerError(f"{self.url}/view: HTTP {e.code} for {file['filename']}") from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise ServerDown(self.url, describe_failure(getattr(e, "reason", e))) from e
        return size

    def interrupt(self, prompt_id: str) -> None:
        """Stop ``prompt_id`` if it is running, and drop it if it is still queued.

        The interrupt is sent only while the prompt runs: servers older than the targeted
        ``/interrupt {prompt_id}`` would otherwise stop whatever else is running.
        """
        running, pending = self.queue()
        if prompt_id in pending:
            self.post_json("/queue", {"delete": [prompt_id]}, tries=1)
        if prompt_id in running:
            self.post_json("/interrupt", {"prompt_id": prompt_id}, tries=1)

    def ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}/ws?clientId={quote(client_id)}"


def rejection(body: dict) -> PromptRejected:
    """A PromptRejected from ComfyUI's 400 body ``{error, node_errors}``, one line per node error."""
    error = body.get("error") or {}
    if isinstance(error, str):
        error = {"message": error}
    errors = []
    for node, info in sorted((body.get("node_errors") or {}).items()):
        for e in info.get("errors") or []:
            errors.append({"node": str(node), "class_type": info.get("class_type", ""), "type": e.get("type", ""),
                           "message": e.get("message", ""), "details": e.get("details", "")})  # fmt: skip
    head = error.get("message") or error.get("type") or "prompt rejected"
    if error.get("type") and error.get("type") not in head:
        head = f"{head} ({error['type']})"
    parts = [f"node {e['node']} ({e['class_type']}) {e['type']}: {e['message']}"
             + (f" [{e['details']}]" if e["details"] else "") for e in errors]  # fmt: skip
    if not errors and error.get("details"):
        parts.append(str(error["details"]))
    return PromptRejected("; ".join([head, *parts]), errors)


def execution_error(entry: dict) -> str:
    """A one-line description of why a finished prompt failed, from its history status messages."""
    status = entry.get("status") or {}
    for event, data in reversed(status.get("messages") or []):
        if event == "execution_error":
            where = f"node {data.get('node_id')} ({data.get('node_type')})"
            return f"{where}: {data.get('exception_type', 'Error')}: {str(data.get('exception_message', '')).strip()}"
        if event == "execution_interrupted":
            return f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"
    return f"prompt failed (status {status.get('status_str', 'unknown')})"


def output_files(entry: dict, nodes: set[str] | None = None) -> list[dict]:
    """The saved files of a history entry, node by node (numeric id order), each list in its order.

    Every list of ``{filename, type: output}`` entries in a node's UI output counts (images,
    gifs, videos); temp previews do not. ``nodes`` limits it to those node ids.
    """
    files = []
    for node in sorted(entry.get("outputs") or {}, key=_node_order):
        if nodes is not None and node not in nodes:
            continue
        for value in (entry["outputs"][node] or {}).values():
            if isinstance(value, list):
                files += [f for f in value if isinstance(f, dict) and f.get("filename")
                          and f.get("type", "output") == "output"]  # fmt: skip
    return files


def _node_order(node_id: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in str(node_id).split(":"))


def _multipart(boundary: str, fields: dict[str, str], file_field: str, filename: str, data: bytes) -> bytes:
    safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    out = bytearray()
    for key, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{safe}"\r\n'
            f"Content-Type: {_mime(filename)}\r\n\r\n").encode()  # fmt: skip
    out += data + f"\r\n--{boundary}--\r\n".encode()
    return bytes(out)


def _mime(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
            ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}.get(
        ext, "application/octet-stream")  # fmt: skip


def _json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as e:
        raise ServerError(f"{where}: not JSON ({data[:80]!r})") from e


def describe_failure(reason: object) -> Down:
    """Why a request got no answer, as a reason (and the exception's text when it is none of the usual ones)."""
    if isinstance(reason, ConnectionRefusedError):
        return Down(DownReason.REFUSED)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return Down(DownReason.TIMED_OUT)
    if isinstance(reason, ConnectionResetError):
        return Down(DownReason.RESET)
    return Down(DownReason.OTHER, str(reason) or type(reason).__name__)
