"""Where the time and memory of one ``stylize`` command go, phase by phase, in one fresh process.

    python benchmarks/profile_stylize.py --models DIR --family official-image --content C.png --style S.png

Runs what ``python -m adaattn_model stylize`` runs (the same functions, in the same order, with a
progress listener, freed memory handed back and each layer's keys let go as the core does) and
prints, for each phase, its wall time and the process's resident and peak memory after it:
importing torch and the package, reading the weights, reading the images, encoding the style
and the content, AdaAttN per layer, decoding, writing the result. Without --models it makes
random weights of the image model (time and memory do not depend on their values).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def memory() -> tuple[float, float]:
    """(resident, peak) MiB of this process."""
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1]) * resource.getpagesize() / 2**20
    return resident, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path)
    parser.add_argument("--family", default="official-image")
    parser.add_argument("--content", type=Path, required=True)
    parser.add_argument("--style", type=Path, required=True)
    parser.add_argument("--sampling", default="official", choices=("official", "exact"))
    args = parser.parse_args()
    rows = []
    mark = [START]

    def phase(name: str) -> None:
        now = time.perf_counter()
        rows.append((name, now - mark[0], *memory()))
        mark[0] = now

    import gc

    gc.disable()  # as python -m adaattn_model does: torch's objects are frozen, not scanned
    import torch

    gc.freeze()
    gc.enable()
    phase("import torch")
    from adaattn_model.adaattn import StyleSource
    from adaattn_model.host_memory import return_freed_memory
    from adaattn_model.images import load_image, save_image
    from adaattn_model.models_folder import pick_family
    from adaattn_model.pipeline import StylizeOptions, chosen_layers, decode_image, encode_content, encode_style
    from adaattn_model.progress import Progress
    from adaattn_model.sampling import Sampling
    from adaattn_model.stages import stylize_layer
    from adaattn_model.weights import ENCODER, load_encoder, load_model, scan_folder

    phase("import adaattn_model")
    tmp = tempfile.TemporaryDirectory()
    folder = args.models
    if folder is None:  # random weights in the released layout, converted
        import synthetic

        from adaattn_model.tools.convert import convert

        synthetic.write_release(Path(tmp.name), video=False)
        convert([Path(tmp.name) / "checkpoints"], Path(tmp.name) / "models")
        folder = Path(tmp.name) / "models"
        mark[0] = time.perf_counter()
    found = scan_folder(folder)
    encoder = load_encoder(found[ENCODER][0])
    model = load_model(found[pick_family(found, args.family)][0])
    phase("read the weights")
    content, _ = load_image(args.content)
    style, _ = load_image(args.style)
    phase("read the images")
    options = StylizeOptions(sampling=Sampling(args.sampling))
    layers, spec = chosen_layers(model, options)
    cpu = torch.device("cpu")
    listener = Progress()  # the command always listens (its bar and Ctrl-C): layers run in bands
    with torch.inference_mode():
        style_code = encode_style(encoder, style, model.family.layers, progress=listener)
        phase("encode the style")
        encoded = encode_content(encoder, content, model.family.layers, progress=listener)
        return_freed_memory(cpu)
        phase("encode the content")
        features = dict(encoded.features)
        for layer in layers:
            sources = [StyleSource(style_code)]
            features[layer] = stylize_layer(model, layer, encoded, sources, options, spec, progress=listener)
            encoded, style_code = encoded.without(layer), style_code.without(layer)
            del sources
            phase(f"AdaAttN at {layer}")
        return_freed_memory(cpu)
        out = decode_image(model, features, encoded, progress=listener).float()
        phase("decode")
    save_image(out.clamp(0, 1), Path(tmp.name) / "out.png")
    phase("write the result")
    total = sum(r[1] for r in rows)
    print(f"{args.content.name} ({content.shape[-1]}x{content.shape[-2]}), {model.family.name}, {args.sampling}")
    print("| phase | seconds | share | resident after | peak after |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, resident, peak in rows:
        print(f"| {name} | {seconds:.2f} | {100 * seconds / total:.0f}% | {resident:.0f} MiB | {peak:.0f} MiB |")
    print(f"| whole | {total:.2f} | | | {rows[-1][3]:.0f} MiB |")


if __name__ == "__main__":
    main()
