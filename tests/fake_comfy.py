"""An in-process stand-in for a ComfyUI server, for testing the batch client without ComfyUI.

It follows the documented behaviour of ComfyUI's endpoints (``server.py``, ``execution.py``):
``POST /upload/image`` (multipart) -> ``{name, subfolder, type}``; ``POST /prompt`` ->
``{prompt_id, number, node_errors}`` or 400 ``{error, node_errors}``; ``GET /queue``;
``GET /history[/<id>]`` with ``status {status_str, completed, messages}`` and ``outputs``;
``GET /view``; ``POST /interrupt``; ``POST /queue {delete}``; ``GET /ws?clientId=`` with real
websocket frames (``status``, ``execution_start``, ``execution_cached``, ``executing``,
``progress``, ``executed``, ``execution_success``, ``execution_error``, ``execution_interrupted``).
Every route also answers under ``/api``.

"Execution" is a tiny interpreter: LoadImage and AdaAttNLoadFrames read the uploaded files,
any ``*Stylize*`` node pairs each content image (or frame) with the style, and SaveImage writes
a small real PNG per image whose text chunks name the SHA-256 of its inputs, so every output
can be traced back. Knobs: ``delay`` per job, ``fail`` (jobs that fail N times, matched by an
input's name), validation ``limits``, ``websocket`` on/off, ``vanish_after`` (the server
disappears when its N-th job starts, once ``vanish_when()`` holds or the earlier outputs were downloaded),
``paused`` (queued jobs wait), ``pause_after`` (pauses itself once N jobs started),
``wait_for_websocket`` (a job waits until its client listens), ``frozen`` (requests hang),
``vanish()``/``revive()``. The knobs let tests hold the server at a chosen point instead of
racing it against the client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
REQUIRED = {
    "AdaAttNLoader": ["encoder_name", "model_name"],
    "LoadImage": ["image"],
    "AdaAttNLoadFrames": ["folder", "first", "count"],
    "AdaAttNStylize": ["model", "content", "style"],
    "AdaAttNStylizeFrames": ["model", "frames", "style"],
    "SaveImage": ["images", "filename_prefix"],
}
OUTPUT_NODES = {"SaveImage"}


# ---------------------------------------------------------------------------- PNG helpers


def png_bytes(text: dict[str, str], rgb: tuple[int, int, int] = (128, 128, 128), size: int = 4) -> bytes:
    """A real ``size`` x ``size`` RGB PNG with ``text`` as tEXt chunks."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
    for key, value in text.items():
        out += chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png_text(data: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG (raises ValueError if it is not a well-formed PNG)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, out = 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        if crc != zlib.crc32(tag + body) & 0xFFFFFFFF:
            raise ValueError("bad PNG chunk checksum")
        if tag == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        if tag == b"IEND":
            return out
        pos += 12 + n
    raise ValueError("truncated PNG")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- websocket (server side)


class WsConn:
    def __init__(self, sock: socket.socket, rfile, tricks: bool):
        self.sock, self.rfile, self.tricks = sock, rfile, tricks
        self.lock = threading.Lock()
        self.closed = False

    def _frame(self, opcode: int, payload: bytes, fin: bool = True) -> bytes:
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            return struct.pack(">BB", b0, n) + payload
        if n < 1 << 16:
            return struct.pack(">BBH", b0, 126, n) + payload
        return struct.pack(">BBQ", b0, 127, n) + payload

    def send_json(self, message: dict) -> None:
        data = json.dumps(message).encode()
        with self.lock:
            if self.closed:
                return
            try:
                if self.tricks and len(data) > 40:
                    # a fragmented message with a ping between its fragments, then a binary "preview"
                    half = len(data) // 2
                    self.sock.sendall(
                        self._frame(0x1, data[:half], fin=False)
                        + self._frame(0x9, b"hi")
                        + self._frame(0x0, data[half:])
                        + self._frame(0x2, b"\x00\x00\x00\x01png")
                    )
                else:
                    self.sock.sendall(self._frame(0x1, data))
            except OSError:
                self.closed = True

    def read_loop(self) -> None:
        """Client frames (masked): answer pings, stop on close."""
        try:
            while not self.closed:
                head = self.rfile.read(2)
                if len(head) < 2:
                    break
                opcode, n = head[0] & 0x0F, head[1] & 0x7F
                if not head[1] & 0x80:
                    break  # clients must mask
                if n == 126:
                    (n,) = struct.unpack(">H", self.rfile.read(2))
                elif n == 127:
                    (n,) = struct.unpack(">Q", self.rfile.read(8))
                key = self.rfile.read(4)
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(self.rfile.read(n)))
                if opcode == 0x8:
                    with self.lock:
                        self.sock.sendall(self._frame(0x8, payload[:2]))
                    break
                if opcode == 0x9:
                    with self.lock:
                        self.sock.sendall(self._frame(0xA, payload))
        except (OSError, ValueError, struct.error):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# ---------------------------------------------------------------------------- the server


class Interrupted(Exception):
    pass


class NodeFailure(Exception):
    def __init__(self, node_id: str, class_type: str, message: str):
        super().__init__(message)
        self.node_id, self.class_type = node_id, class_type


class FakeComfy:
    def __init__(self, root: str | Path, *, delay: float = 0.0, websocket: bool = True, ws_tricks: bool = True,
                 fail: dict[str, int] | None = None, limits: dict[str, tuple[float, float]] | None = None,
                 vanish_after: int | None = None, known: set[str] | None = None, paused: bool = False,
                 pause_after: int | None = None, wait_for_websocket: bool = False,
                 vanish_when: Callable[[], bool] | None = None):  # fmt: skip
        self.root = Path(root)
        self.input_dir, self.output_dir = self.root / "input", self.root / "output"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.delay = delay
        self.websocket = websocket
        self.ws_tricks = ws_tricks
        self.fail = dict(fail or {})  # substring of an input name -> failures left
        self.limits = dict(limits or {"strength": (0.0, 1.0)})
        self.vanish_after = vanish_after
        self.vanish_when = vanish_when  # checked before vanishing (default: every output was downloaded)
        self.known = set(known or REQUIRED)
        self.cond = threading.Condition()
        self.port = 0
        self.httpd: ThreadingHTTPServer | None = None
        self._reset_state()
        # what happened, for the tests
        self.prompts_received: list[str] = []
        self.executed: list[str] = []
        self.uploads: list[str] = []
        self.ws_clients: list[str] = []
        self.started_jobs = 0
        self.frozen = False
        self.paused = paused
        self.pause_after = pause_after
        self.wait_for_websocket = wait_for_websocket
        self.saved: set[tuple[str, str]] = set()  # (subfolder, filename) of every output written
        self.viewed: set[tuple[str, str]] = set()  # ... and of those downloaded through /view

    def _reset_state(self) -> None:
        self.generation = getattr(self, "generation", 0) + 1  # a restarted server forgets the old one's work
        self.queue: list[tuple] = []  # (number, prompt_id, prompt, extra)
        self.running: tuple | None = None
        self.history: dict[str, dict] = {}
        self.sockets: dict[str, WsConn] = {}
        self.number = 0
        self.interrupt_flag = False
        self.alive = True
        self.counter = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- life

    def start(self) -> FakeComfy:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.alive = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        threading.Thread(target=self._worker, args=(self.generation,), daemon=True).start()
        return self

    def vanish(self) -> None:
        """Stop listening and drop every connection and queued prompt, like a killed process."""
        with self.cond:
            if not self.alive:
                return
            self.alive = False
            sockets = list(self.sockets.values())
            self.cond.notify_all()
        httpd, self.httpd = self.httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        for ws in sockets:
            ws.close()

    def revive(self) -> None:
        """Listen again on the same port, with an empty queue and history (a restarted server)."""
        self.vanish()
        with self.cond:
            self._reset_state()
        self.start()

    stop = vanish

    # ---- HTTP API

    def queue_info(self) -> dict:
        with self.cond:
            running = [list(self.running[:2]) + [{}, {}, []]] if self.running else []
            pending = [[n, pid, {}, {}, []] for n, pid, _, _ in sorted(self.queue, key=lambda q: q[0])]
            return {"queue_running": running, "queue_pending": pending}

    def post_prompt(self, body: dict) -> tuple[int, dict]:
        prompt = body.get("prompt")
        if not isinstance(prompt, dict):
            return 400, {"error": _err("no_prompt", "No prompt provided", ""), "node_errors": {}}
        pid = body.get("prompt_id") or str(uuid.uuid4())
        try:
            if str(uuid.UUID(pid)) != pid:
                raise ValueError
        except ValueError:
            return 400, {"error": _err("invalid_prompt_id", "prompt_id must be a valid UUID", ""), "node_errors": {}}
        for node_id, node in prompt.items():
            ct = node.get("class_type")
            if ct not in self.known:
                return 400, {"error": _err("missing_node_type", f"Node '{ct}' not found. The custom node may not "
                                           "be installed.", f"Node ID '#{node_id}'"), "node_errors": {}}  # fmt: skip
        outputs = [nid for nid, node in prompt.items() if node["class_type"] in OUTPUT_NODES]
        if not outputs:
            return 400, {"error": _err("prompt_no_outputs", "Prompt has no outputs", ""), "node_errors": {}}
        node_errors = {}
        for node_id, node in prompt.items():
            errors = self._validate_node(node)
            if errors:
                node_errors[node_id] = {
                    "errors": errors,
                    "dependent_outputs": outputs,
                    "class_type": node["class_type"],
                }
        if node_errors:
            details = "\n".join(f"{e['message']}: {e['details']}" for n in node_errors.values() for e in n["errors"])
            error = _err("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
            return 400, {"error": error, "node_errors": node_errors}
        with self.cond:
            self.number += 1
            self.queue.append((self.number, pid, prompt, {"client_id": body.get("client_id")}))
            self.prompts_received.append(pid)
            self.cond.notify_all()
        return 200, {"prompt_id": pid, "number": self.number, "node_errors": {}}

    def _validate_node(self, node: dict) -> list[dict]:
        errors, inputs = [], node.get("inputs") or {}
        for name in REQUIRED.get(node["class_type"], []):
            if name not in inputs:
                errors.append(_err("required_input_missing", "Required input is missing", name, input_name=name))
        for name, value in inputs.items():
            if name in self.limits and isinstance(value, (int, float)):
                lo, hi = self.limits[name]
                if value > hi:
                    errors.append(_err("value_bigger_than_max", f"Value {value} bigger than max of {hi}",
                                       f"{name}", input_name=name))  # fmt: skip
                elif value < lo:
                    errors.append(_err("value_smaller_than_min", f"Value {value} smaller than min of {lo}",
                                       f"{name}", input_name=name))  # fmt: skip
        image = inputs.get("image")
        if node["class_type"] == "LoadImage" and isinstance(image, str) and not (self.input_dir / image).is_file():
            errors.append(_err("custom_validation_failed", "Custom validation failed for node",
                               f"image - Invalid image file: {image}", input_name="image"))  # fmt: skip
        return errors

    def upload(self, fields: dict, file_name: str, data: bytes) -> tuple[int, dict]:
        subfolder = fields.get("subfolder", "")
        folder = (self.input_dir / subfolder).resolve()
        if not folder.is_relative_to(self.input_dir.resolve()) or not file_name:
            return 400, {}
        folder.mkdir(parents=True, exist_ok=True)
        name, path = file_name, folder / file_name
        if fields.get("overwrite") not in ("true", "1"):
            stem, ext = os.path.splitext(file_name)
            i = 1
            while path.exists() and path.read_bytes() != data:
                name = f"{stem} ({i}){ext}"
                path, i = folder / name, i + 1
        path.write_bytes(data)
        self.uploads.append(f"{subfolder}/{name}" if subfolder else name)
        return 200, {"name": name, "subfolder": subfolder, "type": "input"}

    def interrupt(self, body: dict) -> None:
        with self.cond:
            pid = body.get("prompt_id")
            if self.running and (not pid or self.running[1] == pid):
                self.interrupt_flag = True

    # ---- websocket

    def send(self, event: str, data: dict, client_id: str | None, generation: int | None = None) -> None:
        with self.cond:
            if generation is not None and generation != self.generation:
                return
            targets = list(self.sockets.values()) if client_id is None else [self.sockets.get(client_id)]
        for ws in targets:
            if ws is not None:
                ws.send_json({"type": event, "data": data})

    # ---- execution

    def _worker(self, generation: int) -> None:
        while True:
            with self.cond:
                while self.alive and self.generation == generation and not self._startable():
                    self.cond.wait(0.02)
                if not self.alive or self.generation != generation:
                    return
                self.queue.sort(key=lambda q: q[0])
                item = self.queue.pop(0)
                self.running = item
                self.interrupt_flag = False
                self.started_jobs += 1
                if self.pause_after is not None and self.started_jobs >= self.pause_after:
                    self.paused = True
                vanish = self.vanish_after is not None and self.started_jobs >= self.vanish_after
                ready = self.vanish_when or (lambda: self.saved <= self.viewed)
                while vanish and self.alive and not ready():
                    self.cond.wait(0.02)  # e.g. until what finished before counts as finished
            if vanish:
                self.vanish()
                return
            self._execute(item, generation)

    def unpause(self) -> None:
        """Run queued jobs again, and stop pausing after a number of them."""
        self.pause_after = None
        self.paused = False

    def _startable(self) -> bool:
        if not self.queue or self.paused:
            return False
        client = min(self.queue, key=lambda q: q[0])[3].get("client_id")
        return not self.wait_for_websocket or client in self.sockets

    def _execute(self, item: tuple, gen: int) -> None:
        number, pid, prompt, extra = item
        messages = []

        def send(name: str, data: dict) -> None:
            self.send(name, data, extra.get("client_id"), gen)

        def event(name: str, data: dict) -> None:
            data = {**data, "prompt_id": pid, "timestamp": int(time.time() * 1000)}
            messages.append([name, data])
            send(name, data)

        event("execution_start", {})
        event("execution_cached", {"nodes": []})
        outputs, values, ok = {}, {}, True
        try:
            for node_id in self._order(prompt):
                send("executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
                node = prompt[node_id]
                values[node_id] = self._run_node(node_id, node, prompt, values, pid, send, gen)
                if node["class_type"] in OUTPUT_NODES:
                    outputs[node_id] = values[node_id]
                    send("executed", {"node": node_id, "display_node": node_id, "output": values[node_id],
                                      "prompt_id": pid})  # fmt: skip
            event("execution_success", {})
        except Interrupted as e:
            ok = False
            event(
                "execution_interrupted", {"node_id": str(e), "node_type": prompt[str(e)]["class_type"], "executed": []}
            )
        except NodeFailure as e:
            ok = False
            error = {"node_id": e.node_id, "node_type": e.class_type, "executed": [], "exception_message": str(e),
                     "exception_type": "RuntimeError", "traceback": ["fake traceback"], "current_inputs": {},
                     "current_outputs": []}  # fmt: skip
            event("execution_error", error)
        time.sleep(0.02)  # ComfyUI writes the history a moment after execution_success
        with self.cond:
            if not self.alive or self.generation != gen:
                return
            self.history[pid] = {
                "prompt": [number, pid, prompt, extra, list(outputs)],
                "outputs": outputs if ok else {},
                "status": {"status_str": "success" if ok else "error", "completed": ok, "messages": messages},
                "meta": {},
            }
            self.running = None
            self.executed.append(pid)
        send("executing", {"node": None, "prompt_id": pid})

    def _order(self, prompt: dict) -> list[str]:
        order, seen = [], set()

        def visit(nid: str) -> None:
            if nid in seen:
                return
            seen.add(nid)
            for value in prompt[nid]["inputs"].values():
                if isinstance(value, list) and len(value) == 2 and value[0] in prompt:
                    visit(value[0])
            order.append(nid)

        for nid in prompt:
            if prompt[nid]["class_type"] in OUTPUT_NODES:
                visit(nid)
        return order

    def _run_node(self, node_id: str, node: dict, prompt: dict, values: dict, pid: str, send, gen: int):
        ct, inputs = node["class_type"], node["inputs"]

        def arg(name):
            v = inputs[name]
            return values[v[0]] if isinstance(v, list) and len(v) == 2 and v[0] in prompt else v

        if ct == "LoadImage":
            path = self.input_dir / inputs["image"]
            return [{"name": path.name, "sha": sha256(path.read_bytes())}]
        if ct == "AdaAttNLoadFrames":
            folder = self.input_dir / inputs["folder"]
            files = sorted(p for p in folder.iterdir() if p.is_file())
            first, count = int(inputs["first"]), int(inputs["count"])
            chosen = files[first : first + count if count else None]
            return [{"name": p.name, "sha": sha256(p.read_bytes())} for p in chosen]
        if "Stylize" in ct:
            contents = arg("frames" if "frames" in inputs else "content")
            style = arg("style")[0]
            for needle, left in list(self.fail.items()):
                if left and any(needle in c["name"] for c in contents):
                    self.fail[needle] = left - 1
                    raise NodeFailure(node_id, ct, f"fake failure for {needle!r} ({left - 1} more to come)")
            steps = 4
            for k in range(steps):
                if self.delay:
                    end = time.monotonic() + self.delay / steps
                    while time.monotonic() < end:
                        if self.interrupt_flag or not self.alive or self.generation != gen:
                            raise Interrupted(node_id)
                        time.sleep(0.01)
                if self.interrupt_flag:
                    raise Interrupted(node_id)
                send("progress", {"value": k + 1, "max": steps, "node": node_id, "prompt_id": pid})
            key = "frame" if "frames" in inputs else "content"
            return [{key: c["sha"], "style": style["sha"], "name": c["name"]} for c in contents]
        if ct == "SaveImage":
            images, prefix = arg("images"), str(inputs["filename_prefix"])
            sub, _, stem = prefix.rpartition("/")
            (self.output_dir / sub).mkdir(parents=True, exist_ok=True)
            saved = []
            for image in images:
                self.counter += 1
                name = f"{stem}_{self.counter:05d}_.png"
                text = {k: v for k, v in image.items() if k != "name"}
                rgb = tuple(int(image.get("style", "80")[i : i + 2], 16) for i in (0, 2, 4))
                (self.output_dir / sub / name).write_bytes(png_bytes(text, rgb))
                with self.cond:
                    self.saved.add((sub, name))
                saved.append({"filename": name, "subfolder": sub, "type": "output"})
            return {"images": saved}
        return None


def _err(kind: str, message: str, details: str, **extra) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeComfy
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _route(self) -> tuple[str, dict]:
        parts = urlsplit(self.path)
        path = parts.path[4:] if parts.path.startswith("/api/") else parts.path
        return path, {k: v[0] for k, v in parse_qs(parts.query).items()}

    def _gate(self) -> bool:
        fake = self.server_fake
        while fake.frozen and fake.alive:
            time.sleep(0.05)
        if not fake.alive:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return False
        return True

    def _reply(self, status: int, body, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode() if content_type == "application/json" else body
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up waiting (a frozen server's late answer)
            self.close_connection = True

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        if not self._gate():
            return
        fake = self.server_fake
        path, query = self._route()
        if path == "/ws":
            return self._websocket(query.get("clientId") or uuid.uuid4().hex)
        if path == "/system_stats":
            return self._reply(200, {"system": {"comfyui_version": "fake"}, "devices": []})
        if path == "/queue":
            return self._reply(200, fake.queue_info())
        if path == "/history":
            with fake.cond:
                return self._reply(200, dict(fake.history))
        if path.startswith("/history/"):
            pid = unquote(path[len("/history/") :])
            with fake.cond:
                return self._reply(200, {pid: fake.history[pid]} if pid in fake.history else {})
        if path == "/view":
            base = {"output": fake.output_dir, "input": fake.input_dir}.get(query.get("type", "output"))
            name = query.get("filename", "")
            if base is None or not name or "/" in name or ".." in name:
                return self._reply(400, {})
            file = base / query.get("subfolder", "") / name
            if not file.resolve().is_relative_to(base.resolve()):
                return self._reply(403, {})
            if not file.is_file():
                return self._reply(404, {})
            self._reply(200, file.read_bytes(), "image/png")
            with fake.cond:
                fake.viewed.add((query.get("subfolder", ""), name))
                fake.cond.notify_all()
            return None
        return self._reply(404, {})

    def do_POST(self) -> None:
        if not self._gate():
            return
        fake = self.server_fake
        path, _ = self._route()
        raw = self._body()
        if path == "/upload/image":
            fields, name, data = _parse_multipart(self.headers.get("Content-Type", ""), raw)
            if data is None:
                return self._reply(400, {})
            status, body = fake.upload(fields, name, data)
            return self._reply(status, body)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        if path == "/prompt":
            status, answer = fake.post_prompt(body)
            return self._reply(status, answer)
        if path == "/interrupt":
            fake.interrupt(body)
            return self._reply(200, {})
        if path == "/queue":
            with fake.cond:
                if body.get("clear"):
                    fake.queue.clear()
                for pid in body.get("delete") or []:
                    fake.queue = [q for q in fake.queue if q[1] != pid]
            return self._reply(200, {})
        if path == "/history":
            with fake.cond:
                if body.get("clear"):
                    fake.history.clear()
                for pid in body.get("delete") or []:
                    fake.history.pop(pid, None)
            return self._reply(200, {})
        return self._reply(404, {})

    def _websocket(self, client_id: str) -> None:
        fake = self.server_fake
        key = self.headers.get("Sec-WebSocket-Key")
        if not fake.websocket or (self.headers.get("Upgrade") or "").lower() != "websocket" or not key:
            return self._reply(404, {"error": "no websocket here"})
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        self.wfile.write((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())  # fmt: skip
        self.wfile.flush()
        ws = WsConn(self.connection, self.rfile, fake.ws_tricks)
        with fake.cond:
            old = fake.sockets.pop(client_id, None)
            fake.sockets[client_id] = ws
            fake.ws_clients.append(client_id)
        if old:
            old.close()
        ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}})
        ws.read_loop()
        with fake.cond:
            if fake.sockets.get(client_id) is ws:
                del fake.sockets[client_id]
        self.close_connection = True


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict, str, bytes | None]:
    """(fields, file name, file bytes) of a multipart/form-data body with one file part named 'image'."""
    marker = "boundary="
    if marker not in content_type:
        return {}, "", None
    boundary = content_type.split(marker, 1)[1].split(";")[0].strip().strip('"').encode()
    fields, name, data = {}, "", None
    for part in body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        content = content[:-2] if content.endswith(b"\r\n") else content
        disposition = next(
            (h for h in head.decode("latin-1").split("\r\n") if h.lower().startswith("content-disposition")), ""
        )
        params = dict(p.strip().split("=", 1) for p in disposition.split(";")[1:] if "=" in p)
        field = params.get("name", "").strip('"')
        if "filename" in params and field == "image":
            name, data = params["filename"].strip('"'), content
        else:
            fields[field] = content.decode()
    return fields, name, data
