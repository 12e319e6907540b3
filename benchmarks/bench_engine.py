"""Seconds and peak memory per image: the engine vs the plain materialised reference.

    python benchmarks/bench_engine.py                      # CPU, 256/512/1024 (+2048 engine, official)
    python benchmarks/bench_engine.py --sizes 512 1024 --whole-only
    python benchmarks/bench_engine.py --device cuda --sizes 512 1024 2048
    python benchmarks/bench_engine.py --json results.json

The model is the authors' image architecture (relu3_1 + relu4_1/relu5_1 attention) with
random weights: time and memory do not depend on the weight values. "reference" is
tests/oracle.py run in float32: the reference computation written plainly (attention
matrices materialised, as in the released code). Content and style are square images of
the given size. Each measurement runs in a fresh process; CPU memory is the process's
peak RSS (including ~0.4 GB of Python, torch and weights), CUDA memory is the peak of
torch's allocator. Times are medians over --repeat runs after one warm-up run (sizes up
to 512) or single runs (larger sizes). Configurations whose materialised attention
would not fit in memory are reported, not run.

The second table is the whole process, as a user runs it: for the engine the command
``python -m adaattn_model stylize`` on PNG files (imports, weights from safetensors, image
I/O, stylisation, writing the result), for the reference a script that does the same around
the materialised computation (the released ``.pth`` files through ``torch.load(weights_only=True)``,
PIL in and out). Wall time and the peak RSS of the child process; medians of --repeat runs
(one run above 512), no warm-up (a user's run is cold too, except for the OS file cache).
With ``--pairs N`` the whole processes also run as N interleaved engine/reference pairs after
a warm-up, and the ratio of each pair is reported (median, min, max): on a shared machine
whose speed drifts these hold better than medians of runs made one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

LIMITS = {"relu3_1": 64 * 64, "relu4_1": 256 * 256, "relu5_1": 256 * 256}


def attention_bytes(size: int, mode: str) -> int:
    """Bytes of the largest materialised attention matrix (float32) at ``size``."""
    largest = 0
    for layer, factor in (("relu3_1", 4), ("relu4_1", 8), ("relu5_1", 16)):
        n = (size // factor) ** 2
        n_s = min(n, LIMITS[layer]) if mode == "official" else n
        largest = max(largest, n * n_s * 4)
    return largest


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def worker(args) -> None:
    import synthetic
    import torch

    from adaattn_model.pipeline import StylizeOptions, stylize
    from adaattn_model.sampling import Sampling
    from adaattn_model.tools.convert import convert
    from adaattn_model.weights import load_encoder, load_model

    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        states = synthetic.write_release(Path(tmp), video=False)
        convert([Path(tmp) / "checkpoints"], Path(tmp) / "out")
        encoder = load_encoder(Path(tmp) / "out" / "vgg_normalised.safetensors", device)
        model = load_model(Path(tmp) / "out" / "adaattn_official.safetensors", device)
    g = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, args.size, args.size, generator=g).to(device)
    style = torch.rand(1, 3, args.size, args.size, generator=g).to(device)
    if args.impl == "engine":
        options = StylizeOptions(sampling=Sampling(args.mode))

        def run():
            return stylize(model, encoder, content, style, options=options)
    else:
        import oracle

        ref = {k: {n: t.to(device) for n, t in v.items()} for k, v in states.items()}

        def run():
            return oracle.image_model(ref["vgg"], ref["relu3_1_attention"], ref["transformer"],
                                      ref["image_decoder"], content, style, exact=args.mode == "exact")  # fmt: skip

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    runs = args.repeat + 1 if args.size <= 512 else 1
    for i in range(runs):
        sync()
        start = time.perf_counter()
        run()
        sync()
        if runs == 1 or i > 0:  # the first of several is a warm-up
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"seconds": statistics.median(times), "runs": len(times), "peak_rss": peak, "baseline_rss": base}
    if device.type == "cuda":
        result["peak_cuda"] = torch.cuda.max_memory_allocated()
    print(json.dumps(result))


def reference_whole(args) -> None:
    """The reference as one user command: load the released files and the images, stylise, save."""
    import numpy as np
    import oracle
    import synthetic
    import torch
    from PIL import Image

    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    states = {layout: torch.load(Path(args.release) / rel, map_location=device, weights_only=True)
              for layout, rel in synthetic.RELEASE_FILES.items()}  # fmt: skip

    def load(path: str):
        array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        return torch.from_numpy(array).permute(2, 0, 1)[None].to(device)

    out = oracle.image_model(states["vgg"], states["relu3_1_attention"], states["transformer"],
                             states["image_decoder"], load(args.content), load(args.style),
                             exact=args.mode == "exact")  # fmt: skip
    array = (out[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(args.out)


def whole_inputs(folder: Path, size: int) -> tuple[Path, Path]:
    """Random content and style PNGs of ``size`` (made once per size)."""
    import numpy as np
    from PIL import Image

    paths = folder / f"content_{size}.png", folder / f"style_{size}.png"
    rng = np.random.default_rng(size)
    for path in paths:
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return paths


def whole_weights(folder: Path) -> None:
    """The synthetic release (``.pth``, for the reference) and its conversion (safetensors, for the engine)."""
    import synthetic

    from adaattn_model.tools.convert import convert

    synthetic.write_release(folder, video=False)
    convert([folder / "checkpoints"], folder / "models")


def measure_whole(impl: str, mode: str, size: int, folder: Path, args) -> dict:
    content, style = whole_inputs(folder, size)
    out = folder / f"out_{impl}.png"
    if impl == "engine":
        cmd = [sys.executable, "-m", "adaattn_model", "stylize", "--content", content, "--style", style, "-o", out,
               "--models", folder / "models", "--family", "official-image", "--sampling", mode, "--device",
               args.device, "--quiet"]  # fmt: skip
    else:
        cmd = [sys.executable, __file__, "--worker", "reference-whole", "--mode", mode, "--device", args.device,
               "--release", folder, "--content", content, "--style", style, "--out", out]  # fmt: skip
    times, peaks = [], []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    for _ in range(args.repeat if size <= 512 else 1):
        start = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - start)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        if status != 0:
            return {"error": (err.strip().splitlines() or ["killed"])[-1][:80]}
        peaks.append(usage.ru_maxrss * 1024)
    return {"seconds": statistics.median(times), "runs": len(times), "peak_rss": max(peaks)}


def measure(impl: str, mode: str, size: int, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--mode", mode, "--size", str(size), "--device", args.device,
           "--repeat", str(args.repeat)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["killed"])[-1]
        return {"error": tail[:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--skip-engine-exact-above", type=int, default=1024,
                        help="engine exact mode is O(n^2) in compute; skip it above this size (default 1024)")
    parser.add_argument("--whole-only", action="store_true", help="only the whole-process table")
    parser.add_argument("--pairs", type=int, default=0, metavar="N",
                        help="also run the whole processes as N interleaved engine/reference pairs")  # fmt: skip
    parser.add_argument("--worker", choices=("engine", "reference", "reference-whole"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("exact", "official"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    for name in ("--release", "--content", "--style", "--out"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "reference-whole":
        reference_whole(args)
        return
    if args.worker:
        worker(argparse.Namespace(impl=args.worker, mode=args.mode, size=args.size, device=args.device,
                                  repeat=args.repeat))  # fmt: skip
        return
    if args.device == "cpu":
        import torch

        print(f"# CPU: {os.cpu_count()} cores, {total_memory() / 2**30:.0f} GiB, torch {torch.__version__}",
              f"threads {torch.get_num_threads()}")  # fmt: skip
    memory = total_memory()
    rows = [] if args.whole_only else forward_table(args, memory)
    rows += whole_table(args, memory)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def whole_table(args, memory: int) -> list[dict]:
    print("\nwhole process (python -m adaattn_model stylize vs the reference as one script)")
    print("| size | sampling | engine s | reference s | engine / reference | engine peak | reference peak | "
          "engine / reference |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        whole_weights(folder)
        for size in args.sizes:
            for mode in ("official", "exact"):
                r = {}
                for impl in ("engine", "reference"):
                    if impl == "reference" and attention_bytes(size, mode) * 3 > 0.6 * memory:
                        r[impl] = {"skipped": "does not fit"}
                    elif impl == "engine" and mode == "exact" and size > args.skip_engine_exact_above:
                        r[impl] = {"skipped": "not run"}
                    else:
                        r[impl] = measure_whole(impl, mode, size, folder, args)
                    rows.append({"table": "whole", "size": size, "mode": mode, "impl": impl, **r[impl]})
                e, ref = r["engine"], r["reference"]

                def cell(x: dict, key: str, fmt) -> str:
                    return fmt(x[key]) if key in x else (x.get("skipped") or x.get("error") or "-")

                ratio_t = f"{e['seconds'] / ref['seconds']:.2f}" if "seconds" in e and "seconds" in ref else ""
                ratio_m = f"{e['peak_rss'] / ref['peak_rss']:.2f}" if "peak_rss" in e and "peak_rss" in ref else ""
                secs, gib = (lambda v: f"{v:.2f} s"), (lambda v: f"{v / 2**30:.2f} GiB")
                print(f"| {size} | {mode} | {cell(e, 'seconds', secs)} | {cell(ref, 'seconds', secs)} | {ratio_t} | "
                      f"{cell(e, 'peak_rss', gib)} | {cell(ref, 'peak_rss', gib)} | {ratio_m} |", flush=True)  # fmt: skip
        if args.pairs:
            rows += pairs_table(args, folder, memory)
    return rows


def pairs_table(args, folder: Path, memory: int) -> list[dict]:
    """Engine and reference run in turn (after one warm-up run of each), the ratios taken pair by pair: unlike
    medians of runs made one after the other, they hold when a shared machine's speed drifts."""
    print("\ninterleaved pairs (engine, reference, engine, ...; each ratio from one pair)")
    print("| size | sampling | pairs | wall engine / reference: median (min-max) | peak ratio: median |")
    print("|---:|---|---:|---|---:|")
    once = argparse.Namespace(**{**vars(args), "repeat": 1})
    rows = []
    for size in args.sizes:
        for mode in ("official", "exact"):
            too_big = attention_bytes(size, mode) * 3 > 0.6 * memory
            if too_big or (mode == "exact" and size > args.skip_engine_exact_above):
                continue
            for impl in ("engine", "reference"):  # warm-up
                measure_whole(impl, mode, size, folder, once)
            times, peaks = [], []
            for _ in range(args.pairs):
                e, r = (measure_whole(impl, mode, size, folder, once) for impl in ("engine", "reference"))
                if "seconds" not in e or "seconds" not in r:
                    break
                times.append(e["seconds"] / r["seconds"])
                peaks.append(e["peak_rss"] / r["peak_rss"])
            if not times:
                continue
            rows.append({"table": "pairs", "size": size, "mode": mode, "time_ratios": times, "peak_ratios": peaks})
            spread = f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})"
            print(f"| {size} | {mode} | {len(times)} | {spread} | {statistics.median(peaks):.2f} |", flush=True)
    return rows


def forward_table(args, memory: int) -> list[dict]:
    rows = []
    header = "| size | sampling | implementation | seconds (median) | peak memory | note |"
    print(header)
    print("|---:|---|---|---:|---:|---|")
    for size in args.sizes:
        for mode in ("official", "exact"):
            for impl in ("engine", "reference"):
                note = ""
                if impl == "reference" and attention_bytes(size, mode) * 3 > 0.6 * memory:
                    r = {"skipped": f"needs > {attention_bytes(size, mode) * 3 / 2**30:.0f} GiB"}
                elif impl == "engine" and mode == "exact" and size > args.skip_engine_exact_above:
                    r = {"skipped": "not run (hours on this CPU)"}
                else:
                    r = measure(impl, mode, size, args)
                rows.append({"size": size, "mode": mode, "impl": impl, **r})
                if "seconds" in r:
                    mem = r.get("peak_cuda", r["peak_rss"]) / 2**30
                    note = f"{r['runs']} run(s)"
                    print(f"| {size} | {mode} | {impl} | {r['seconds']:.2f} | {mem:.2f} GiB | {note} |", flush=True)
                else:
                    print(f"| {size} | {mode} | {impl} | - | - | {r.get('skipped') or r.get('error')} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
