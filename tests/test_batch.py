"""The batch queue client (``adaattn_batch``) against in-process ComfyUI doubles (``fake_comfy.py``)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import python_m, wait_until
from fake_comfy import FakeComfy, png_bytes, png_text

from adaattn_batch import cli
from adaattn_batch.errors import BatchError
from adaattn_batch.jobs import WARMUP_RESIDUAL
from adaattn_batch.progress import Display
from adaattn_batch.storage import atomic_write
from adaattn_batch.websocket import WebSocket, WebSocketError
from adaattn_batch.workflow import coerce, load_workflow, resolve

ROOT = Path(__file__).resolve().parent.parent
BASIC = ROOT / "workflows" / "api" / "adaattn_basic.json"
FRAMES = ROOT / "workflows" / "api" / "adaattn_frames_folder.json"
FAST = ["--poll", "0.1", "--probe-interval", "0.3", "--server-grace", "0", "--http-timeout", "5"]


def run_with_deadline(capsys, *args, timeout: float = 60.0) -> tuple[int, str]:
    """``run`` in a thread, so a client that would wait forever fails the test instead of hanging it."""
    result = []
    thread = threading.Thread(target=lambda: result.append(run(capsys, *args)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert result, f"the batch did not finish within {timeout:g}s"
    return result[0]


def pngs(folder: Path) -> list[str]:
    return [n for n in outputs(folder) if n.endswith(".png")]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def images(tmp_path):
    content, style = tmp_path / "content", tmp_path / "style"
    content.mkdir()
    style.mkdir()
    for i, name in enumerate(("content_a", "content_b", "content_c")):
        (content / f"{name}.png").write_bytes(png_bytes({"name": name}, (40 * i, 10, 10)))
    for i, name in enumerate(("style_x", "style_y")):
        (style / f"{name}.png").write_bytes(png_bytes({"name": name}, (10, 60 * i, 10)))
    return {
        "content": content,
        "style": style,
        "contents": sorted(content.iterdir()),
        "styles": sorted(style.iterdir()),
    }


@pytest.fixture
def fakes(tmp_path):
    started = []

    def make(**knobs) -> FakeComfy:
        fake = FakeComfy(tmp_path / f"server{len(started)}", **knobs).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.vanish()


def run(capsys, *args) -> tuple[int, str]:
    rc = cli.main(FAST + [str(a) for a in args])  # later options win
    out = capsys.readouterr()
    return rc, out.out + out.err


def grid_args(images, out, *servers, workflow=BASIC):
    args = [workflow, "--content", images["content"], "--style", images["style"], "-o", out]
    for server in servers:
        args += ["--server", server.url]
    return args


def outputs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {name: ((folder / name).stat().st_ino, (folder / name).stat().st_mtime_ns) for name in outputs(folder)}


def check_grid(images, out: Path) -> None:
    """Exactly one output per (content, style), each made from the right pair."""
    expected = [f"{c.stem}__{s.stem}.png" for c in images["contents"] for s in images["styles"]]
    assert outputs(out) == sorted(expected + ["adaattn_batch.json"])
    for c in images["contents"]:
        for s in images["styles"]:
            text = png_text((out / f"{c.stem}__{s.stem}.png").read_bytes())
            assert (text["content"], text["style"]) == (sha(c), sha(s))


def manifest(out: Path) -> dict:
    return json.loads((out / "adaattn_batch.json").read_text())


def done_on(out: Path, url: str | None = None) -> int:
    """Jobs the manifest records as done (on the server ``url``); 0 before there is a manifest."""
    try:
        jobs = manifest(out)["jobs"].values()
    except FileNotFoundError:
        return 0
    return sum(j["state"] == "done" and url in (None, j["server"]) for j in jobs)


# ---------------------------------------------------------------------------- one server, resume


def test_grid_on_one_server_and_rerun_does_nothing(tmp_path, images, fakes, capsys):
    # Jobs start only once the client listens, and /history is polled every 10 minutes: finishing at all
    # shows the websocket (fragmented frames, pings, binary previews) drove the batch.
    fake = fakes(delay=0.05, wait_for_websocket=True)
    out = tmp_path / "out"
    rc, text = run_with_deadline(capsys, *grid_args(images, out, fake), "--poll", "600")
    assert rc == 0, text
    check_grid(images, out)
    assert fake.ws_clients and len(fake.prompts_received) == 6
    jobs = manifest(out)["jobs"]
    assert {j["state"] for j in jobs.values()} == {"done"} and len(jobs) == 6
    assert all(j["outputs"][0]["sha256"] == sha(out / j["outputs"][0]["file"]) for j in jobs.values())
    assert "6 done, 0 skipped, 0 failed" in text and "time per job: median" in text
    # Uploads are content-addressed and sent once per server: 3 contents + 2 styles.
    assert len(fake.uploads) == 5 and all(u.startswith("adaattn_batch/") for u in fake.uploads)
    before = snapshot(out)
    rc, text = run(capsys, *grid_args(images, out, fake))
    assert rc == 0 and "0 done, 6 skipped, 0 failed" in text
    assert len(fake.prompts_received) == 6 and snapshot(out) == before


def test_history_polling_without_websocket(tmp_path, images, fakes, capsys, monkeypatch):
    fake = fakes(websocket=False, paused=True)  # runs nothing until the client has said it polls instead

    class Watching(Display):
        def note(self, text):
            super().note(text)
            if "no websocket" in text:
                fake.paused = False

    monkeypatch.setattr(cli, "Display", Watching)
    rc, text = run(capsys, *grid_args(images, tmp_path / "out", fake))
    assert rc == 0, text
    assert "no websocket" in text and not fake.ws_clients
    check_grid(images, tmp_path / "out")
    other = fakes()
    rc, text = run(capsys, *grid_args(images, tmp_path / "out2", other), "--no-websocket")
    assert rc == 0 and not other.ws_clients


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_subprocess_resumes_without_redoing_anything(tmp_path, images, fakes, capsys, sig):
    fake = fakes(delay=0.1, pause_after=3)  # the batch cannot end before the signal: 3 jobs at most run
    out = tmp_path / "out"
    command = python_m("adaattn_batch", *grid_args(images, out, fake), *FAST)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: len(pngs(out)) >= 2, what="two outputs")
    proc.send_signal(sig)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, log
    assert "interrupted" in log
    first = snapshot(out)
    done_first = [k for k, j in manifest(out)["jobs"].items() if j["state"] == "done"]
    assert 2 <= len(done_first) <= 3
    fake.unpause()
    rc, text = run(capsys, *grid_args(images, out, fake))
    assert rc == 0, text
    assert f"{len(done_first)} skipped" in text
    check_grid(images, out)
    # Finished outputs were not rewritten, and no job ran twice: prompts left on the server by the
    # interrupted run were collected from its history, not sent again.
    assert {k: v for k, v in snapshot(out).items() if k in first and k.endswith(".png")} == {
        k: v for k, v in first.items() if k.endswith(".png")
    }
    assert len(fake.prompts_received) == 6 and len(set(fake.executed)) == 6


def test_killed_subprocess_resumes(tmp_path, images, fakes, capsys):
    fake = fakes(delay=0.1, pause_after=4)  # the batch cannot end before the kill
    out = tmp_path / "out"
    command = [sys.executable, "-m", "adaattn_batch", *map(str, grid_args(images, out, fake)), *FAST]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len(pngs(out)) >= 3, what="three outputs")
    proc.kill()
    proc.wait(timeout=60)
    fake.unpause()
    jobs = manifest(out)["jobs"]  # whole, whenever the process died
    finished = {f"{k}.png" for k, j in jobs.items() if j["state"] == "done"}
    first = {k: v for k, v in snapshot(out).items() if k in finished}
    assert len(first) >= 2
    rc, text = run(capsys, *grid_args(images, out, fake))
    assert rc == 0, text
    assert f"{len(first)} skipped" in text
    check_grid(images, out)
    assert {k: snapshot(out)[k] for k in first} == first
    assert len(fake.prompts_received) == 6  # ids are recorded before sending: nothing was sent twice


def test_interrupt_from_a_hook_in_process(tmp_path, images, fakes, capsys, monkeypatch):
    fake = fakes(delay=0.1)
    out = tmp_path / "out"

    class Interrupting(Display):
        def job_done(self, *args):
            super().job_done(*args)
            if self.finished == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(cli, "Display", Interrupting)
    rc, text = run(capsys, *grid_args(images, out, fake))
    assert rc == 130 and "interrupted" in text
    states = [j["state"] for j in manifest(out)["jobs"].values()]
    assert states.count("done") == 2
    # In a process of its own the run's threads end with it; here they outlive it: wait for them, so that none
    # sends a prompt it recorded after the rerun has looked for it.
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("job ")], what="attempts to end")
    monkeypatch.setattr(cli, "Display", Display)
    rc, text = run(capsys, *grid_args(images, out, fake))
    assert rc == 0 and "4 done, 2 skipped" in text
    check_grid(images, out)
    assert len(fake.prompts_received) == 6


def test_changed_input_or_missing_output_is_redone_and_other_recipe_refused(tmp_path, images, fakes, capsys):
    fake = fakes()
    out = tmp_path / "out"
    assert run(capsys, *grid_args(images, out, fake))[0] == 0
    changed = images["contents"][1]
    changed.write_bytes(png_bytes({"name": "new"}, (1, 2, 3)))
    (out / "content_a__style_y.png").unlink()
    rc, text = run(capsys, *grid_args(images, out, fake))
    assert rc == 0 and "3 done, 3 skipped" in text and "inputs changed" in text and "missing" in text
    check_grid(images, out)
    rc, text = run(capsys, *grid_args(images, out, fake), "--set", "AdaAttN Stylize.strength=0.5")
    assert rc == 2 and "different batch" in text and "the workflow changed" in text
    rc, text = run(capsys, *grid_args(images, out, fake), "--set", "AdaAttN Stylize.strength=0.5", "--force-new")
    assert rc == 0 and "6 done" in text and (out / "adaattn_batch.json.old").is_file()


# ---------------------------------------------------------------------------- several servers


def test_two_servers_one_disappears_mid_batch(tmp_path, images, fakes, capsys):
    out = tmp_path / "out"
    a = fakes(delay=0.2)
    # b goes when its second job starts, once the client has taken its first job for done.
    b = fakes(delay=0.2, vanish_after=2, vanish_when=lambda: done_on(out, b.url) == 1)
    rc, text = run(capsys, *grid_args(images, out, a, b))
    assert rc == 0, text
    assert "is down" in text
    check_grid(images, out)
    jobs = manifest(out)["jobs"]
    by_server = [j["server"] for j in jobs.values()]
    assert by_server.count(b.url) == 1 and by_server.count(a.url) == 5
    moved = [j for j in jobs.values() if any(e["kind"] == "lost" for e in j["errors"])]
    assert moved and all(j["state"] == "done" and j["server"] == a.url for j in moved)
    assert len(b.executed) == 1 and len(a.executed) == 5


def test_unresponsive_server_is_left_then_used_again_when_back(tmp_path, images, fakes, capsys, monkeypatch):
    # a holds its jobs until b has come back and taken a job again; b holds its first job until it freezes.
    a, b = fakes(paused=True), fakes(paused=True)
    out = tmp_path / "out"
    b_prompts_when_back = []

    class Watching(Display):
        def server_down(self, server, reason, moved):
            super().server_down(server, reason, moved)
            b.frozen = False  # it answers again: the next probe finds it

        def server_up(self, server):
            super().server_up(server)
            b_prompts_when_back.append(len(b.prompts_received))

    def partition():  # b stops answering (requests hang) while it holds a job
        wait_until(lambda: b.prompts_received, what="a job on b")
        b.frozen, b.paused = True, False
        wait_until(lambda: b_prompts_when_back and len(b.prompts_received) > b_prompts_when_back[0],
                   what="a job on b after it came back")  # fmt: skip
        a.paused = False

    monkeypatch.setattr(cli, "Display", Watching)
    threading.Thread(target=partition, daemon=True).start()
    rc, text = run(capsys, *grid_args(images, out, a, b), "--http-timeout", "0.5", "--per-server", "1")
    assert rc == 0, text
    assert "is down (timed out)" in text and "is back" in text
    check_grid(images, out)
    assert b.url in [j["server"] for j in manifest(out)["jobs"].values()]  # used again after it came back


def test_jobs_spread_by_queue_depth(tmp_path, images, fakes, capsys):
    busy, idle = fakes(paused=True), fakes()
    for name in ("chelsea.png", "great_wave_hokusai.jpg"):  # what the workflow's own LoadImage nodes name
        (busy.input_dir / name).write_bytes(png_bytes({"name": name}))
    for _ in range(4):  # another user's work, queued on the first server
        assert busy.post_prompt({"prompt": json.loads(BASIC.read_text()), "client_id": "someone"})[0] == 200

    def drain():  # the other user's work stays queued until the idle server has done five of our jobs
        wait_until(lambda: len(idle.executed) >= 5, what="five jobs on the idle server")
        busy.unpause()

    threading.Thread(target=drain, daemon=True).start()
    rc, text = run(capsys, *grid_args(images, tmp_path / "out", busy, idle), "--per-server", "1")
    assert rc == 0, text
    servers = [j["server"] for j in manifest(tmp_path / "out")["jobs"].values()]
    # The first job goes to the shorter queue; the second to the only server with room left, behind the
    # other user's prompts; the idle server does the rest meanwhile.
    assert servers[0] == idle.url and servers.count(idle.url) == 5 and servers.count(busy.url) == 1


def test_restarted_server_loses_prompts_and_they_are_sent_again(tmp_path, images, fakes, capsys):
    fake = fakes(paused=True)  # the first prompt waits in the queue until the restart forgets it
    out = tmp_path / "out"

    def restart():
        wait_until(lambda: fake.prompts_received, what="a prompt")
        fake.revive()  # same port, empty queue and history
        fake.paused = False

    threading.Thread(target=restart, daemon=True).start()
    rc, text = run(capsys, *grid_args(images, out, fake), "--server-grace", "30")
    assert rc == 0, text
    check_grid(images, out)
    assert any(e["kind"] == "lost" for j in manifest(out)["jobs"].values() for e in j["errors"])


def test_all_servers_down_stops_and_rerun_resumes(tmp_path, images, fakes, capsys):
    out = tmp_path / "out"
    fake = fakes(delay=0.1, vanish_after=3, vanish_when=lambda: done_on(out) == 2)
    rc, text = run(capsys, *grid_args(images, out, fake))
    assert rc == 3 and "all servers are down" in text and "rerun to resume" in text
    assert len([n for n in outputs(out) if n.endswith(".png")]) == 2
    fake.vanish_after = None
    fake.revive()
    rc, text = run(capsys, *grid_args(images, out, fake))
    assert rc == 0 and "4 done, 2 skipped" in text
    check_grid(images, out)
    rc, text = run(capsys, *grid_args(images, out, fakes()) + ["--server", "http://127.0.0.1:9"])
    assert rc == 0 and "6 skipped" in text  # nothing to do: no server is even asked
    gone = tmp_path / "other"
    rc, text = run(capsys, *grid_args(images, gone) + ["--server", "http://127.0.0.1:9"])
    assert rc == 3 and "no server answers" in text


# ---------------------------------------------------------------------------- failures


def test_validation_errors_are_reported_not_retried(tmp_path, images, fakes, capsys):
    fake = fakes()
    out = tmp_path / "out"
    rc, text = run(capsys, *grid_args(images, out, fake), "--set", "AdaAttN Stylize.strength=5")
    assert rc == 1
    assert "value_bigger_than_max" in text and "node 4 (AdaAttNStylize)" in text and "6 failed" in text
    jobs = manifest(out)["jobs"]
    assert all(j["state"] == "failed" and j["attempts"] == 1 for j in jobs.values())
    assert all([e["kind"] for e in j["errors"]] == ["validation"] for j in jobs.values())
    assert fake.prompts_received == [] and "retry" not in text
    broken = json.loads(BASIC.read_text())
    broken["4"]["class_type"] = "NoSuchNode"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    rc, text = run(capsys, *grid_args(images, tmp_path / "out2", fake, workflow=tmp_path / "broken.json"))
    assert rc == 1 and "missing_node_type" in text and "NoSuchNode" in text


def test_flaky_jobs_are_retried_and_permanent_failures_recorded(tmp_path, images, fakes, capsys):
    fake = fakes(fail={"content_b": 2, "content_c": 100})
    out = tmp_path / "out"
    rc, text = run(capsys, *grid_args(images, out, fake), "--retries", "2")
    assert rc == 1
    jobs = manifest(out)["jobs"]
    for style in ("style_x", "style_y"):
        assert jobs[f"content_a__{style}"]["state"] == "done" and not jobs[f"content_a__{style}"]["errors"]
        assert jobs[f"content_b__{style}"]["state"] == "done"
        failed = jobs[f"content_c__{style}"]
        assert failed["state"] == "failed" and failed["attempts"] == 3
        assert "fake failure for 'content_c'" in failed["errors"][-1]["message"]
        assert "node 4 (AdaAttNStylize)" in failed["errors"][-1]["message"]
    assert sum(len(jobs[f"content_b__{s}"]["errors"]) for s in ("style_x", "style_y")) == 2
    assert "retry" in text and "2 failed" in text and "failed: content_c__style_x" in text
    assert not (out / "content_c__style_x.png").exists()
    # A rerun tries the failed jobs again (with fresh retries) and only those.
    fake.fail = {}
    rc, text = run(capsys, *grid_args(images, out, fake))
    assert rc == 0 and "2 done, 4 skipped" in text


def test_job_timeout_interrupts_and_counts_as_failure(tmp_path, images, fakes, capsys):
    fake = fakes(delay=600)  # never finishes by itself
    out = tmp_path / "out"
    rc, text = run(capsys, BASIC, "--content", images["contents"][0], "--style", images["styles"][0],
                   "-o", out, "--server", fake.url, "--job-timeout", "0.3", "--retries", "1")  # fmt: skip
    assert rc == 1 and "timed out" in text
    job = manifest(out)["jobs"]["content_a__style_x"]
    assert job["state"] == "failed" and job["attempts"] == 2
    interrupted = [h for h in fake.history.values() if h["status"]["status_str"] == "error"]
    assert interrupted and all(h["status"]["messages"][-1][0] == "execution_interrupted" for h in interrupted)


# ---------------------------------------------------------------------------- frames


def frame_folder(tmp_path, n=8) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(n):
        (folder / f"frame_{48 + i:04d}.png").write_bytes(png_bytes({"frame": str(i)}, (i * 20, 0, 0)))
    return folder


def test_frames_in_ranges_with_warmup(tmp_path, images, fakes, capsys):
    fake = fakes()
    frames = frame_folder(tmp_path)
    out = tmp_path / "out"
    style = images["styles"][0]
    args = [
        FRAMES,
        "--frames",
        frames,
        "--range",
        "3",
        "--warmup",
        "1",
        "--style",
        style,
        "-o",
        out,
        "--server",
        fake.url,
    ]
    rc, text = run(capsys, *args)
    assert rc == 0, text
    names = sorted(p.name for p in frames.iterdir())
    assert outputs(out) == sorted(names + ["adaattn_batch.json"])
    for name in names:  # each output made from the input frame of the same name, with the style
        text_chunks = png_text((out / name).read_bytes())
        assert text_chunks["frame"] == sha(frames / name) and text_chunks["style"] == sha(style)
    folders = {}
    for upload in fake.uploads:
        folder, _, name = upload.rpartition("/")
        folders.setdefault(folder, []).append(name)
    frame_sets = sorted(sorted(v) for k, v in folders.items() if k != "adaattn_batch")
    assert [len(v) for v in frame_sets] == [3, 4, 3]  # 3 frames, 1 warmup + 3, 1 warmup + 2 (sorted by name)
    assert ["000000-frame_0053.png", "000001-frame_0054.png", "000002-frame_0055.png"] in frame_sets
    jobs = manifest(out)["jobs"]
    assert sorted(jobs) == ["frame_0048-frame_0050", "frame_0051-frame_0053", "frame_0054-frame_0055"]
    rc, text = run(capsys, *args)
    assert rc == 0 and "3 skipped" in text


def test_frames_in_several_styles_go_to_subfolders(tmp_path, images, fakes, capsys):
    fake = fakes()
    frames = frame_folder(tmp_path, 4)
    out = tmp_path / "out"
    rc, text = run(capsys, FRAMES, "--frames", frames, "--range", "4", "--style", images["style"], "-o", out,
                   "--server", fake.url)  # fmt: skip
    assert rc == 0, text
    expected = [f"{s.stem}/{f.name}" for s in images["styles"] for f in sorted(frames.iterdir())]
    assert outputs(out) == sorted(expected + ["adaattn_batch.json"])


# ---------------------------------------------------------------------------- bindings


def test_bindings_by_id_give_the_same_results(tmp_path, images, fakes, capsys):
    fake = fakes()
    out = tmp_path / "out"
    rc, text = run(capsys, *grid_args(images, out, fake), "--bind", "content=2.image", "--bind", "style=3.image")
    assert rc == 0, text
    check_grid(images, out)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--bind", "content=Contnt.image"], "no node with that title or id"),
        (["--bind", "content=Content.img"], "has no input 'img'; its inputs: image"),
        (["--bind", "content=AdaAttN Stylize.content"], "wired to node 2"),
        (["--bind", "content=Content"], "expected NODE.INPUT"),
        (["--bind", "mask=Content.image"], "grid mode binds content and style"),
        (["--bind", "content=Style.image"], "both name"),
        (["--set", "AdaAttN Stylize.strength=strong"], "expected a number"),
        (["--set", "Content.image=x.png"], "is bound to 'content'"),
    ],
)
def test_bad_bindings_are_one_line_errors(tmp_path, images, capsys, extra, message):
    rc, text = run(capsys, *grid_args(images, tmp_path / "out"), *extra)
    assert rc == 2 and message in text
    assert len(text.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_resolve_titles_ids_dots_and_duplicates():
    wf = load_workflow(BASIC)
    assert resolve(wf, "Content.image").node == "2" and resolve(wf, "3.image").node == "3"
    wf["9"] = {"class_type": "SaveVideo", "inputs": {"format.codec": "h264"}, "_meta": {"title": "v1.2 out"}}
    target = resolve(wf, "v1.2 out.format.codec")
    assert (target.node, target.input) == ("9", "format.codec")
    wf["7"] = {"class_type": "LoadImage", "inputs": {"image": "a.png"}, "_meta": {"title": "Style"}}
    with pytest.raises(BatchError, match="names several nodes"):
        resolve(wf, "Style.image")
    assert coerce("2024", "prefix", "x") == "2024" and coerce('"a"', "b", "x") == "a"
    assert coerce("3", 1, "x") == 3 and coerce("0.5", 1.0, "x") == 0.5 and coerce("false", True, "x") is False
    assert coerce("[1, 2]", None, "x") == [1, 2] and coerce("plain", None, "x") == "plain"
    with pytest.raises(BatchError, match="Export \\(API\\)"):
        load_workflow(ROOT / "workflows" / "adaattn_basic.json")  # the canvas version


def test_set_file_uploads_it(tmp_path, images, fakes, capsys):
    fake = fakes()
    wf = json.loads(BASIC.read_text())
    wf["6"] = {"class_type": "LoadImage", "inputs": {"image": "mask.png"}, "_meta": {"title": "Extra"}}
    (tmp_path / "extra.json").write_text(json.dumps(wf))
    extra = tmp_path / "mask.png"
    extra.write_bytes(png_bytes({"name": "mask"}))
    args = grid_args(images, tmp_path / "out", fake, workflow=tmp_path / "extra.json")
    rc, text = run(capsys, *args, "--set", f"Extra.image=@{extra}")
    assert rc == 0, text
    assert f"adaattn_batch/{sha(extra)[:16]}-mask.png" in fake.uploads
    extra.write_bytes(png_bytes({"name": "another mask"}))
    rc, text = run(capsys, *args, "--set", f"Extra.image=@{extra}")
    assert rc == 2 and "the --set @files changed" in text
    args = grid_args(images, tmp_path / "out2", fake, workflow=tmp_path / "extra.json")
    rc, text = run(capsys, *args, "--set", "Extra.image=nowhere.png")
    assert rc == 1 and "Invalid image file: nowhere.png" in text


def test_several_images_per_job_get_suffixes_or_one_output_node_is_chosen(tmp_path, images, fakes, capsys):
    fake = fakes()
    wf = json.loads(BASIC.read_text())
    wf["6"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "copy"},
               "_meta": {"title": "Save copy"}}  # fmt: skip
    (tmp_path / "two.json").write_text(json.dumps(wf))
    one = [images["contents"][0], "--style", images["styles"][0], "--server", fake.url, "--quiet"]
    rc, text = run(capsys, tmp_path / "two.json", "--content", *one, "-o", tmp_path / "out")
    assert rc == 0, text
    assert outputs(tmp_path / "out") == ["adaattn_batch.json", "content_a__style_x_1.png", "content_a__style_x_2.png"]
    assert "done    " not in text and "summary: 1 job: 1 done" in text  # --quiet: the summary only
    rc, text = run(
        capsys, tmp_path / "two.json", "--content", *one, "-o", tmp_path / "o2", "--output-node", "Save copy"
    )
    assert rc == 0 and outputs(tmp_path / "o2") == ["adaattn_batch.json", "content_a__style_x.png"]


# ---------------------------------------------------------------------------- pieces


def test_manifest_is_never_half_written(tmp_path, images, fakes, capsys, monkeypatch):
    fake = fakes()
    out = tmp_path / "out"
    reads, bad, stop = [0], [], threading.Event()

    def reader():
        path = out / "adaattn_batch.json"
        while not stop.is_set():
            try:
                json.loads(path.read_bytes())
                reads[0] += 1
            except FileNotFoundError:
                pass
            except ValueError as e:
                bad.append(e)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert run(capsys, *grid_args(images, out, fake))[0] == 0
    finally:
        stop.set()
        thread.join()
    assert reads[0] >= 1 and not bad
    # A write that fails half-way leaves the old file and no temporary file behind.
    target = tmp_path / "m.json"
    target.write_text('{"old": true}')

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write(target, b'{"new": tr')
    assert json.loads(target.read_text()) == {"old": True} and os.listdir(tmp_path).count("m.json") == 1
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".m.json")]


def test_second_run_on_the_same_manifest_is_refused(tmp_path, images, fakes, capsys):
    fake = fakes(paused=True)  # the first run waits for its jobs as long as the test needs
    out = tmp_path / "out"
    command = python_m("adaattn_batch", *grid_args(images, out, fake), *FAST)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: fake.prompts_received, what="the first run's prompts")
        rc, text = run(capsys, *grid_args(images, out, fake))
        assert rc == 2 and "in use by another adaattn-batch run" in text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_websocket_client_against_the_double(fakes):
    fake = fakes()
    ws = WebSocket.connect(fake.url.replace("http", "ws") + "/ws?clientId=abc")
    message = json.loads(ws.recv(timeout=5))  # fragmented, with a ping in between and a binary frame after
    assert message["type"] == "status" and message["data"]["sid"] == "abc"
    ws.close()
    fake.vanish()
    with pytest.raises(OSError):
        WebSocket.connect(fake.url.replace("http", "ws") + "/ws?clientId=abc", timeout=2)
    assert issubclass(WebSocketError, OSError)


def test_importing_the_client_needs_no_torch():
    code = (
        "import sys, adaattn_batch, adaattn_batch.cli, adaattn_batch.scheduler, adaattn_batch.client; "
        "bad = [m for m in ('torch', 'numpy', 'PIL', 'comfy', 'adaattn_model') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_contacts_no_server(tmp_path, images, capsys):
    rc, text = run(capsys, *grid_args(images, tmp_path / "out"), "--server", "http://127.0.0.1:9", "--dry-run")
    assert rc == 0 and text.count("  run   ") == 6 and "content -> Content.image (node 2, LoadImage)" in text


def test_frames_warmup_is_chosen_from_the_workflows_stabilisers(tmp_path, images, capsys):
    """By default each range gets as many warm-up frames as the workflow's temporal smoothing needs (0.9 in
    the shipped workflow: 24); an override of the smoothing changes it, a number given is kept."""
    frames = frame_folder(tmp_path, n=12)
    base = [FRAMES, "--frames", frames, "--range", "4", "--style", images["styles"][0], "-o", tmp_path / "out",
            "--dry-run"]  # fmt: skip
    expected = math.ceil(math.log(WARMUP_RESIDUAL) / math.log(0.9))
    assert expected == 24
    for extra, warmup in [([], expected), (["--set", "AdaAttN Stylize Frames.temporal_smoothing=0"], 0),
                          (["--set", "AdaAttN Stylize Frames.shared_normalization=0.5"], expected),
                          (["--warmup", "3"], 3), (["--warmup", "auto"], expected)]:  # fmt: skip
        rc, text = run(capsys, *base, *extra)
        assert rc == 0, text
        assert ("(warmup" not in text) if warmup == 0 else f"(warmup {warmup})" in text, (extra, text)
    with pytest.raises(SystemExit) as refused:
        cli.main([str(a) for a in (*base, "--warmup", "some")])
    assert refused.value.code == 2 and "expected a number of frames or auto" in capsys.readouterr().err
