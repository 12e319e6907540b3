"""``python -m adaattn_batch`` (also ``adaattn-batch``): run a batch through ComfyUI servers.

Exit codes: 0 every job done (or done before); 1 some job failed; 2 a usage, workflow or
manifest error (nothing ran); 3 no server answers any more (the manifest is saved: rerun to
resume); 130 interrupted (Ctrl-C; the manifest is saved: rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import BatchError
from .jobs import FileHasher, expand_images, make_plan
from .manifest import Manifest
from .progress import Display, plural
from .scheduler import Options, Scheduler
from .workflow import load_workflow

EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_SERVERS_DOWN = 3
EXIT_INTERRUPTED = 130
MANIFEST_NAME = "adaattn_batch.json"

EPILOG = """\
bindings: NAME=NODE.INPUT, NODE a node title (_meta.title) or id. Defaults:
  grid:   content=Content.image  style=Style.image
  frames: frames=Frames.folder   style=Style.image (when --style is given)
--set NODE.INPUT=VALUE is typed like the input's current value; VALUE '@FILE' uploads FILE.

examples:
  python -m adaattn_batch workflows/api/adaattn_basic.json --content photos/ --style paintings/ -o out/
  python -m adaattn_batch workflows/api/adaattn_frames_folder.json --frames shot_010/ --range 24 --warmup 4 \\
      --style starry.jpg --server http://gpu1:8188 --server http://gpu2:8188 -o shot_010_styled/
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adaattn-batch",
        description="Run an API-format ComfyUI workflow over many images or frame ranges, on one or several "
        "ComfyUI servers. A manifest in the output folder makes reruns resume.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("workflow", type=Path, help="API-format workflow JSON (e.g. workflows/api/adaattn_basic.json)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="folder for the results")
    p.add_argument("--server", action="append", metavar="URL",
                   help="ComfyUI server, repeatable (default http://127.0.0.1:8188)")  # fmt: skip
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    g = p.add_argument_group("jobs (a grid, or frames)")
    g.add_argument("--content", nargs="+", metavar="PATH", help="grid: content images (files or folders)")
    g.add_argument("--style", nargs="+", metavar="PATH",
                   help="grid: style images; frames: optional style image(s), one pass each")  # fmt: skip
    g.add_argument("--frames", type=Path, metavar="DIR", help="frames: a folder of frames (sorted by name)")
    g.add_argument("--range", type=int, default=0, metavar="N", help="frames: frames per job")
    g.add_argument("--warmup", type=_warmup, default=None, metavar="K|auto",
                   help="frames: also send the K frames before each range (outputs dropped) so the temporal "
                        "stabilisers start warm at range boundaries; auto (default): as many as the workflow's "
                        "stabilisers need (24 for temporal smoothing 0.9, 0 without smoothing)")  # fmt: skip
    g = p.add_argument_group("workflow")
    g.add_argument("--bind", action="append", default=[], metavar="NAME=NODE.INPUT",
                   help="where an input goes in the workflow (see below)")  # fmt: skip
    g.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="fixed value for an input, e.g. 'AdaAttN Stylize.strength=0.8'")  # fmt: skip
    g.add_argument("--output-node", action="append", default=[], metavar="NODE",
                   help="download only this output node's files (title or id; repeatable; default: all)")  # fmt: skip
    g = p.add_argument_group("running")
    g.add_argument("--manifest", type=Path, metavar="FILE", help=f"manifest file (default OUT/{MANIFEST_NAME})")
    g.add_argument(
        "--force-new",
        action="store_true",
        help="start a new manifest even if the existing one was made with another workflow or settings",
    )
    g.add_argument("--retries", type=int, default=2, help="retries after an execution error or timeout (default 2)")
    g.add_argument("--per-server", type=int, default=2, metavar="P",
                   help="jobs queued on each server at a time (default 2)")  # fmt: skip
    g.add_argument(
        "--job-timeout",
        type=float,
        default=0,
        metavar="S",
        help="interrupt a job after S seconds of execution and retry it (default 0: no limit)",
    )
    g.add_argument("--http-timeout", type=float, default=30, metavar="S", help="per request (default 30)")
    g.add_argument("--poll", type=float, default=1.0, metavar="S",
                   help="queue and history polling interval (default 1)")  # fmt: skip
    g.add_argument("--probe-interval", type=float, default=10, metavar="S",
                   help="how often a server that is down is tried again (default 10)")  # fmt: skip
    g.add_argument("--server-grace", type=float, default=30, metavar="S",
                   help="how long all servers may be down before the batch stops (default 30)")  # fmt: skip
    g.add_argument("--no-websocket", action="store_true", help="follow jobs through /history polling only")
    g.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra HTTP header for every request (e.g. for a proxy that wants a token)")  # fmt: skip
    g.add_argument("--cancel-on-interrupt", action="store_true",
                   help="on Ctrl-C also remove this batch's prompts from the servers (default: leave them; "
                        "a rerun collects their results)")  # fmt: skip
    g.add_argument("--dry-run", action="store_true", help="list the jobs and what a run would do, contact no server")
    g.add_argument("-q", "--quiet", action="store_true", help="print only problems and the summary")
    return p


def _warmup(text: str) -> int | None:
    """``--warmup``: a number of frames, or auto (None)."""
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of frames or auto, got {text!r}") from None


def plan_from_args(args: argparse.Namespace, hasher: FileHasher):
    workflow = load_workflow(args.workflow)
    if args.frames is not None:
        if args.content:
            raise BatchError("use either --content/--style (a grid) or --frames (ranges of frames), not both")
        if not args.range:
            raise BatchError("--frames needs --range N (frames per job)")
        if not args.frames.is_dir():
            raise BatchError(f"{args.frames}: no such frames folder")
        frames = expand_images([args.frames], "frames")
        styles = expand_images(args.style, "style") if args.style else []
        return make_plan(workflow, "frames", frames=frames, styles=styles, range_size=args.range,
                         warmup=args.warmup, binds=args.bind, sets=args.set, output_node=args.output_node,
                         hasher=hasher)  # fmt: skip
    if not args.content or not args.style:
        raise BatchError("give --content and --style (a grid), or --frames DIR --range N")
    if args.range or args.warmup is not None:
        raise BatchError("--range and --warmup go with --frames")
    return make_plan(workflow, "grid", contents=expand_images(args.content, "content"),
                     styles=expand_images(args.style, "style"), binds=args.bind, sets=args.set,
                     output_node=args.output_node, hasher=hasher)  # fmt: skip


def options_from_args(args: argparse.Namespace) -> Options:
    if args.retries < 0 or args.per_server < 1:
        raise BatchError("--retries must be >= 0 and --per-server >= 1")
    if args.poll <= 0 or args.http_timeout <= 0 or args.job_timeout < 0:
        raise BatchError("--poll and --http-timeout must be > 0, --job-timeout >= 0")
    headers = {}
    for text in args.header:
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            raise BatchError(f"--header {text!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    return Options(retries=args.retries, per_server=args.per_server, job_timeout=args.job_timeout,
                   poll=args.poll, probe_interval=args.probe_interval, server_grace=args.server_grace,
                   http_timeout=args.http_timeout, websocket=not args.no_websocket,
                   cancel_on_interrupt=args.cancel_on_interrupt, headers=headers)  # fmt: skip


def dry_run(plan, manifest_path: Path, out_dir: Path) -> int:
    done = {}
    if manifest_path.is_file():
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
            if data.get("recipe") != plan.recipe:
                print(f"note: {manifest_path} belongs to a different batch; a run would refuse it (see --force-new)")
            else:
                done = {k: v for k, v in data.get("jobs", {}).items() if v.get("state") == "done"}
        except (OSError, ValueError):
            print(f"note: {manifest_path} is not readable")
    print(f"{plural(len(plan.jobs), 'job')} ({plan.describe}); bindings: "
          + ", ".join(f"{n} -> {t.label}" for n, t in plan.bindings.items()))  # fmt: skip
    for job in plan.jobs:
        rec = done.get(job.id)
        ok = rec and rec.get("key") == job.key and all((out_dir / o["file"]).is_file() for o in rec["outputs"])
        inputs = "; ".join(f"{n}: {', '.join(p.name for p in files)}" for n, files in job.files.items())
        print(f"  {'skip' if ok else 'run '}  {job.id}  ({inputs}{f'; warmup {job.warmup}' if job.warmup else ''})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = _sigterm_as_interrupt()
    try:
        return _main(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt():
    """A farm scheduler's SIGTERM ends the run like Ctrl-C: manifest saved, summary printed."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _main(args: argparse.Namespace) -> int:
    out_dir: Path = args.output
    manifest_path: Path = args.manifest or out_dir / MANIFEST_NAME
    display = Display(quiet=args.quiet)
    try:
        options = options_from_args(args)
        hasher = FileHasher(_cached_hashes(manifest_path))
        plan = plan_from_args(args, hasher)
        if args.dry_run:
            return dry_run(plan, manifest_path, out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise BatchError(f"{out_dir}: the output must be a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest = Manifest.open(manifest_path, plan.recipe, plan.recipe_info, force_new=args.force_new)
    except BatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    try:
        manifest.hashes.update(hasher.cache)
        try:
            scheduler = Scheduler(plan, args.server or ["http://127.0.0.1:8188"], manifest, out_dir, options, display)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_ERROR
        try:
            summary = scheduler.run()
        except KeyboardInterrupt:
            summary = scheduler.summary
            display.summary(summary, str(manifest_path))
            print("interrupted: the manifest is saved; run the same command again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        display.summary(summary, str(manifest_path))
        if summary.stopped:
            return EXIT_SERVERS_DOWN
        return EXIT_FAILED if summary.failed or summary.left else 0
    finally:
        manifest.close()


def _cached_hashes(manifest_path: Path) -> dict:
    """File hashes from an earlier run's manifest, so unchanged inputs are not read again."""
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
        hashes = data.get("hashes")
        return dict(hashes) if isinstance(hashes, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


if __name__ == "__main__":
    sys.exit(main())
