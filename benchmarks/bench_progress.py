"""What progress reporting costs, and how often the bar moves.

    python benchmarks/bench_progress.py                     # overhead at 512, gaps at 1024
    python benchmarks/bench_progress.py --gap-sizes 1024 2048 --untiled-too

Uses the lite weights in models/ (``python -m adaattn_model fetch``), exact sampling,
a 512x512 style. Table 1: one 512x512 stylisation (encode, AdaAttN at relu4_1, decode)
with ``progress=None``, with a listener that does nothing, and with that listener but no
row bands (every layer in one piece, as without a listener or on a GPU): medians of --repeat runs after
one warm-up, and the overhead against the first row. Table 2: each size through the core
(``pipeline.stylize``, the style encoded in the run, tiled when the core chooses to; with
--untiled-too also untiled): the number of steps, the total time, the longest gap between two
steps (how long a cancel can wait) and the step that ended it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from adaattn_model import progress as progress_module  # noqa: E402
from adaattn_model.adaattn import StyleSource, adaattn_layer  # noqa: E402
from adaattn_model.features import encode  # noqa: E402
from adaattn_model.functional import crop_padding, pad_to_multiple  # noqa: E402
from adaattn_model.models_folder import default_models_dir  # noqa: E402
from adaattn_model.pipeline import MIN_SIZE, SIZE_MULTIPLE, StylizeOptions, encode_style, stylize  # noqa: E402
from adaattn_model.progress import Progress  # noqa: E402
from adaattn_model.sampling import Sampling  # noqa: E402
from adaattn_model.weights import load_encoder, load_model  # noqa: E402


def stylize_one(model, encoder, content, style, progress):
    """One image through the engine's stages, each given ``progress``."""
    layer = "relu4_1"
    padded, pads = pad_to_multiple(content, SIZE_MULTIPLE, MIN_SIZE)
    enc = encode(encoder, padded, (layer,), pads=pads, progress=progress)
    feat = adaattn_layer(layer, enc, [StyleSource(style)], projections=None, spec=model.family.attention,
                         sampling=Sampling("exact"), max_sample=2**30, progress=progress)  # fmt: skip
    return crop_padding(model.decode({layer: feat}, progress=progress), enc.pads)


def timed(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=512, help="image side for the overhead table")
    parser.add_argument("--gap-sizes", type=int, nargs="*", default=[1024], help="image sides for the gap table")
    parser.add_argument("--untiled-too", action="store_true", help="gap table: also run each size untiled")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    folder = default_models_dir()
    encoder = load_encoder(folder / "vgg_normalised.safetensors")
    model = load_model(folder / "adain_decoder.safetensors")
    gen = torch.Generator().manual_seed(0)
    style = encode_style(encoder, torch.rand(1, 3, 512, 512, generator=gen), ("relu4_1",))
    content = torch.rand(1, 3, args.size, args.size, generator=gen)

    def noop(done: int, total: int) -> None:
        pass

    def run(progress_factory):
        return lambda: stylize_one(model, encoder, content, style, progress_factory())

    counter = Progress()
    stylize_one(model, encoder, content, style, counter)
    steps = counter.done
    listener = Progress(noop, lambda: None)
    start = time.perf_counter()
    for _ in range(100_000):
        listener.step()
    per_step = (time.perf_counter() - start) / 100_000

    rows = [("progress=None", run(lambda: None)), ("no-op listener", run(lambda: Progress(noop, lambda: None)))]
    base = None
    print(f"{args.size}x{args.size} lite, exact, median of {args.repeat} ({torch.get_num_threads()} threads)")
    print(f"{'':28} {'seconds':>8} {'overhead':>9}")
    for name, fn in rows:
        t = timed(fn, args.repeat)
        base = base if base is not None else t
        print(f"{name:28} {t:8.3f} {100 * (t / base - 1):+8.1f}%")
    saved = progress_module.CPU_STEP_WORK
    progress_module.CPU_STEP_WORK = 2**62
    t = timed(run(lambda: Progress(noop, lambda: None)), args.repeat)
    progress_module.CPU_STEP_WORK = saved
    print(f"{'no-op listener, no bands':28} {t:8.3f} {100 * (t / base - 1):+8.1f}%")
    print(f"{steps} steps x {1e6 * per_step:.2f} us per step (no-op listener) = "
          f"{100 * steps * per_step / base:.4f}% of the image's time")  # fmt: skip

    print("\nthe core (pipeline.stylize: style encoding included, tiling as chosen), exact sampling, 512x512 style")
    print(f"{'size':>6} {'tiled':>6} {'steps':>6} {'seconds':>8} {'max gap s':>10} {'median gap s':>13}  longest gap ends at")
    style_image = torch.rand(1, 3, 512, 512, generator=gen)
    for size in args.gap_sizes:
        for tile_size in (None, 0) if args.untiled_too else (None,):
            image = torch.rand(1, 3, size, size, generator=gen)
            stamps, where = [], []

            def report(done: int, total: int) -> None:
                stamps.append(time.perf_counter())
                frame = next(f for f in reversed(traceback.extract_stack()[:-1]) if "progress.py" not in f.filename)
                where.append(f"{Path(frame.filename).name}:{frame.lineno} {frame.name}")

            options = StylizeOptions(sampling=Sampling("exact"), tile_size=tile_size)
            tiled = "auto" if tile_size is None else "no"
            start = time.perf_counter()
            stylize(model, encoder, image, style_image, options=options, progress=Progress(report))
            gaps = [b - a for a, b in zip([start, *stamps], stamps)]
            longest = max(range(len(gaps)), key=gaps.__getitem__)
            print(f"{size:6} {tiled:>6} {len(stamps):6} {stamps[-1] - start:8.1f} {gaps[longest]:10.2f} "
                  f"{statistics.median(gaps):13.3f}  {where[longest]}", flush=True)  # fmt: skip

if __name__ == "__main__":
    main()
