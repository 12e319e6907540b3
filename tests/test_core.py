"""The one stylisation core: one attention rule, one encoding cache, and the same pixels from the
command line, the Python API and the Stylize node."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import rand_images
from test_nodes import as_image, comfy, load, run  # noqa: F401  (comfy is a fixture)

from adaattn_model.attention import AttentionSpec, resolve_attention
from adaattn_model.encoding_cache import EncodingCache, encoded_bytes, tensor_digest
from adaattn_model.images import load_image, save_image
from adaattn_model.model import FAMILIES, LITE_DETAIL, LITE_GLOBAL_SHARE
from adaattn_model.pipeline import Style, StylizeOptions, Stylizer, stylize
from adaattn_model.progress import Progress
from adaattn_model.sampling import Sampling
from adaattn_model.tools.cli import main

# --- the attention rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family, kind, temperature, want",
    [
        ("lite", None, None, AttentionSpec("cosine_softmax", 0.03, LITE_GLOBAL_SHARE)),
        ("lite", "auto", 0.0, AttentionSpec("cosine_softmax", 0.03, LITE_GLOBAL_SHARE)),
        ("lite", "softmax", None, AttentionSpec("softmax", 1.0, LITE_GLOBAL_SHARE)),  # not lite's 0.03
        ("lite", "softmax", 0.5, AttentionSpec("softmax", 0.5, LITE_GLOBAL_SHARE)),
        ("lite", "cosine", None, AttentionSpec("cosine", 1.0, LITE_GLOBAL_SHARE)),  # the share is the family's
        ("lite", None, 0.1, AttentionSpec("cosine_softmax", 0.1, LITE_GLOBAL_SHARE)),
        ("official-image", None, None, AttentionSpec("softmax", 1.0)),
        ("official-image", "cosine_softmax", None, AttentionSpec("cosine_softmax", 0.03)),
        ("official-image", None, 2.0, AttentionSpec("softmax", 2.0)),
        ("official-video", "auto", None, AttentionSpec("cosine", 1.0)),
        ("official-video", "softmax", None, AttentionSpec("softmax", 1.0)),
    ],
)
def test_one_attention_rule(family, kind, temperature, want):
    default = FAMILIES[family].attention
    assert resolve_attention(default, kind, temperature) == want
    assert StylizeOptions(attention=kind, temperature=temperature).spec_for(FAMILIES[family]) == want
    # a global share given wins over the family's, with any kind and temperature
    shared = replace(want, global_share=0.25)
    assert resolve_attention(default, kind, temperature, 0.25) == shared
    options = StylizeOptions(attention=kind, temperature=temperature, global_share=0.25)
    assert options.spec_for(FAMILIES[family]) == shared


def test_family_defaults_for_share_and_detail():
    lite, official = FAMILIES["lite"], FAMILIES["official-image"]
    assert (lite.attention.global_share, lite.detail) == (LITE_GLOBAL_SHARE, LITE_DETAIL)
    assert all(FAMILIES[f].attention.global_share == 0 and FAMILIES[f].detail == 0
               for f in ("official-image", "official-video"))  # fmt: skip
    assert StylizeOptions().detail_for(lite) == LITE_DETAIL and StylizeOptions().detail_for(official) == 0
    assert StylizeOptions(detail=0.0).detail_for(lite) == 0 and StylizeOptions(detail=0.3).detail_for(official) == 0.3
    explicit = StylizeOptions(attention=AttentionSpec("softmax", 0.2), global_share=0.4).spec_for(lite)
    assert explicit == AttentionSpec("softmax", 0.2, 0.4)


def test_an_attention_spec_is_taken_as_given_unless_a_temperature_is_set():
    lite = FAMILIES["lite"]
    assert StylizeOptions(attention=AttentionSpec("softmax", 0.2)).spec_for(lite) == AttentionSpec("softmax", 0.2)
    got = StylizeOptions(attention=AttentionSpec("softmax", 0.2), temperature=0.7).spec_for(lite)
    assert got == AttentionSpec("softmax", 0.7)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"attention": "dot"}, "unknown attention 'dot'"),
        ({"temperature": -1.0}, "temperature must be a positive number"),
        ({"color": "sepia"}, "unknown colour mode 'sepia'"),
        ({"blend": "add"}, "unknown blend mode 'add'"),
        ({"style_max_side": -1}, "style_max_side must be >= 0"),
        ({"budget_bytes": 0}, "memory budget must be > 0"),
        ({"global_share": 1.5}, "global_share must be in \\[0, 1\\]"),
        ({"detail": -0.1}, "detail must be in \\[0, 1\\]"),
    ],
)
def test_bad_options_are_one_line_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        StylizeOptions(**kw)


# --- the encoding cache ----------------------------------------------------------------------------


@pytest.fixture
def counted(models):
    """A Stylizer (lite) whose encoder counts its runs."""
    encoder = models["encoder"]
    calls = []
    real = encoder.stages

    def stages(image, upto="relu5_1", **kwargs):
        calls.append(tuple(image.shape))
        return real(image, upto, **kwargs)

    encoder.stages = stages
    yield Stylizer(encoder, models["lite"]), calls
    del encoder.stages


CONTENT = rand_images(1, 3, 40, 56, seed=1)
OTHER_CONTENT = rand_images(1, 3, 40, 56, seed=3)
STYLE = rand_images(1, 3, 48, 48, seed=2)


def test_changing_only_what_acts_after_the_encoder_skips_it(counted):
    stylizer, calls = counted
    first = stylizer.stylize(CONTENT, STYLE, options=StylizeOptions(alpha=1.0))
    assert len(calls) == 2  # content and style
    mask = torch.zeros(1, 40, 56)
    mask[..., :20] = 1
    for options, kw in [
        (StylizeOptions(alpha=0.4), {}),
        (StylizeOptions(attention="softmax"), {}),
        (StylizeOptions(temperature=0.2, sampling=Sampling("official", 3)), {}),
        (StylizeOptions(color="luminance"), {}),
        (StylizeOptions(alpha=0.7), {"mask": mask}),
    ]:
        stylizer.stylize(CONTENT, STYLE, options=options, **kw)
    assert len(calls) == 2
    again = stylizer.stylize(CONTENT, STYLE, options=StylizeOptions(alpha=1.0))
    assert torch.equal(first, again) and len(calls) == 2
    assert stylizer.cache.hits == 12 and stylizer.cache.encodes == 2


def test_cached_results_equal_uncached_ones(counted, models):
    stylizer, _ = counted
    options = StylizeOptions(alpha=0.6, color="luminance")
    stylizer.stylize(CONTENT, [STYLE, OTHER_CONTENT], options=options)  # fills the cache
    cached = stylizer.stylize(CONTENT, [STYLE, OTHER_CONTENT], options=options)
    plain = stylize(models["lite"], models["encoder"], CONTENT, [STYLE, OTHER_CONTENT], options=options)
    assert torch.equal(cached, plain)


def test_a_new_content_encodes_only_the_content(counted):
    stylizer, calls = counted
    stylizer.stylize(CONTENT, STYLE)
    stylizer.stylize(OTHER_CONTENT, STYLE, options=StylizeOptions(alpha=0.5))
    assert len(calls) == 3


def test_match_colour_encodes_the_recoloured_style_again_for_a_new_content(counted):
    stylizer, calls = counted
    options = StylizeOptions(color="match")
    stylizer.stylize(CONTENT, STYLE, options=options)
    stylizer.stylize(CONTENT, STYLE, options=StylizeOptions(color="match", alpha=0.3))
    assert len(calls) == 2  # same content: the same recoloured style
    stylizer.stylize(OTHER_CONTENT, STYLE, options=options)
    assert len(calls) == 4  # the content and its own recoloured style
    stylizer.stylize(CONTENT, STYLE)
    assert len(calls) == 5  # the plain style is another image than the recoloured ones


def test_the_cache_stays_within_its_bound(models):
    encoder, model = models["encoder"], models["lite"]
    one = encoded_bytes(_encode_once(encoder, model))  # a 48x48 content or style: the same size
    stylizer = Stylizer(encoder, model, cache_bytes=2 * one + one // 2)  # room for two: the style and one content
    contents = [rand_images(1, 3, 48, 48, seed=10 + i) for i in range(3)]
    for c in contents:
        stylizer.stylize(c, contents[0])
    cache = stylizer.cache
    assert len(cache) == 2 and cache.bytes <= cache.max_bytes
    encodes = cache.encodes
    stylizer.stylize(contents[2], contents[0])  # the two most recent are kept
    assert cache.encodes == encodes
    stylizer.stylize(contents[1], contents[0])  # ... and this one was evicted first
    assert cache.encodes == encodes + 1


def _encode_once(encoder, model):
    from adaattn_model.stages import encode_content

    with torch.no_grad():
        return encode_content(encoder, rand_images(1, 3, 48, 48), model.family.layers)


def test_an_item_larger_than_the_cache_is_not_kept_and_zero_turns_it_off():
    cache = EncodingCache(max_bytes=10)
    item = _FakeEncoded(100)
    cache.put("a", item)
    assert len(cache) == 0 and cache.bytes == 0
    with pytest.raises(ValueError, match="must be >= 0"):
        EncodingCache(-1)


class _FakeEncoded:
    def __init__(self, n):
        self.features, self.keys = {"relu4_1": torch.zeros(n, dtype=torch.uint8)}, {}


def test_digest_tells_values_shape_and_dtype_apart():
    x = rand_images(1, 3, 8, 8)
    y = x.clone()
    y[0, 0, 0, 0] += 1e-6
    keys = {tensor_digest(t) for t in (x, y, x.reshape(1, 3, 4, 16), x.double())}
    assert len(keys) == 4 and tensor_digest(x.clone()) == tensor_digest(x)


def test_moving_the_model_empties_the_cache(models):
    stylizer = Stylizer(models["encoder"], models["lite"])
    stylizer.stylize(CONTENT, STYLE)
    stylizer.to("cpu")  # same placement: kept
    assert len(stylizer.cache) == 2
    moved = Stylizer(_copy(models["encoder"]), _copy(models["lite"]))
    moved.stylize(CONTENT, STYLE)
    moved.to(torch.float64)
    assert len(moved.cache) == 0 and moved.cache.bytes == 0


def _copy(module):
    import copy

    return copy.deepcopy(module)


# --- progress --------------------------------------------------------------------------------------


def test_progress_counts_every_stage_and_can_cancel(models):
    reports = []
    progress = Progress(report=lambda done, total: reports.append((done, total)))
    contents = rand_images(3, 3, 32, 32, seed=4)
    stylize(models["official-image"], models["encoder"], contents, STYLE, options=StylizeOptions(color="luminance"),
            progress=progress)  # fmt: skip
    # at least 1 style + 3 contents x (encode + 3 layers + decode + colour), and the engine's own steps within
    # them (VGG and decoder layers, attention blocks); the bar only moves forward and ends full
    dones, totals = [d for d, _ in reports], [t for _, t in reports]
    assert len(reports) > 19 and dones == sorted(set(dones)) and totals == sorted(totals)
    assert dones[-1] == totals[-1] and all(d <= t for d, t in reports)

    class Cancelled(Exception):
        pass

    def cancel_after(n):
        count = [0]

        def check():
            count[0] += 1
            if count[0] > n:
                raise Cancelled()

        return check

    with pytest.raises(Cancelled):
        stylize(models["lite"], models["encoder"], contents, STYLE, progress=Progress(check=cancel_after(3)))


# --- the same pixels from every surface -----------------------------------------------------------


def pixels(rgb):
    return (rgb.float().clamp(0, 1) * 255).round().to(torch.uint8)


SETTINGS = [
    ("auto", None, "none"),
    ("softmax", None, "luminance"),
    ("cosine_softmax", 0.1, "match"),
    ("auto", None, "match"),
    ("cosine", None, "luminance"),
]


@pytest.fixture
def files(tmp_path):
    content = rand_images(1, 3, 40, 56, seed=21)
    style = rand_images(1, 3, 72, 60, seed=22)
    save_image(content, tmp_path / "content.png")
    save_image(style, tmp_path / "style.png")
    # what every surface reads: the 8-bit files
    return tmp_path, load_image(tmp_path / "content.png")[0], load_image(tmp_path / "style.png")[0]


@pytest.mark.parametrize("attention, temperature, color", SETTINGS)
def test_cli_api_and_node_give_the_same_pixels(comfy, release, files, attention, temperature, color):  # noqa: F811
    pack, _ = comfy
    folder, content, style = files
    strength, side = 0.8, 48
    out = folder / "cli.png"
    argv = ["stylize", "--content", folder / "content.png", "--style", folder / "style.png", "-o", out,
            "--encoder", release["out"] / "vgg_normalised.safetensors",
            "--model", release["out"] / "adain_decoder.safetensors", "--alpha", strength, "--style-max-side", side,
            "--preserve-color", color, "--device", "cpu", "--quiet"]  # fmt: skip
    if attention != "auto":
        argv += ["--attention", attention]
    if temperature is not None:
        argv += ["--temperature", temperature]
    assert main([str(a) for a in argv]) == 0
    from_cli = pixels(load_image(out)[0])

    loaded = load(pack)
    from_node = run(pack, "AdaAttNStylize", model=loaded, content=as_image(content), style=as_image(style),
                    strength=strength, style_max_side=side, preserve_color=color, attention=attention,
                    temperature=temperature or 0.0)  # fmt: skip
    from_node = pixels(from_node.movedim(-1, 1))

    stylizer = Stylizer(loaded.stylizer.encoder, loaded.model)
    options = StylizeOptions(alpha=strength, attention=attention, temperature=temperature, color=color,
                             style_max_side=side)  # fmt: skip
    from_api = pixels(stylizer.stylize(content, Style(style), options=options))
    assert torch.equal(from_api, from_cli)
    assert torch.equal(from_api, from_node)


@pytest.mark.parametrize("share, detail", [(0.3, 0.9), (0.0, 0.0)])
def test_cli_api_and_node_agree_on_global_share_and_detail(comfy, release, files, share, detail):  # noqa: F811
    pack, _ = comfy
    folder, content, style = files
    out = folder / "cli.png"
    assert main([str(a) for a in ["stylize", "--content", folder / "content.png", "--style", folder / "style.png",
                                  "-o", out, "--encoder", release["out"] / "vgg_normalised.safetensors", "--model",
                                  release["out"] / "adain_decoder.safetensors", "--global-share", share, "--detail",
                                  detail, "--style-max-side", 0, "--device", "cpu", "--quiet"]]) == 0  # fmt: skip
    loaded = load(pack)
    from_node = run(pack, "AdaAttNStylize", model=loaded, content=as_image(content), style=as_image(style),
                    style_max_side=0, global_share=share, detail=detail)  # fmt: skip
    options = StylizeOptions(global_share=share, detail=detail)
    from_api = pixels(stylize(loaded.model, loaded.stylizer.encoder, content, style, options=options))
    assert torch.equal(pixels(load_image(out)[0]), from_api)
    assert torch.equal(pixels(from_node.movedim(-1, 1)), from_api)
    defaults = pixels(stylize(loaded.model, loaded.stylizer.encoder, content, style))
    assert not torch.equal(defaults, from_api)  # the settings were not the defaults, and they took effect


@pytest.mark.parametrize("color", ["none", "match"])
def test_node_and_api_agree_with_a_mask(comfy, files, color):  # noqa: F811
    pack, _ = comfy
    _, content, style = files
    mask = torch.zeros(1, 40, 56)
    mask[:, 8:30, 10:40] = 0.75
    loaded = load(pack)
    from_node = run(pack, "AdaAttNStylize", model=loaded, content=as_image(content), style=as_image(style),
                    style_max_side=0, preserve_color=color, attention="softmax", mask=mask)  # fmt: skip
    options = StylizeOptions(attention="softmax", color=color)
    from_api = stylize(loaded.model, loaded.stylizer.encoder, content, style, mask=mask, options=options)
    assert torch.equal(pixels(from_node.movedim(-1, 1)), pixels(from_api))
    unmasked = stylize(loaded.model, loaded.stylizer.encoder, content, style, options=options)
    assert not torch.equal(pixels(from_api), pixels(unmasked))


def test_softmax_on_lite_runs_at_temperature_one_everywhere(comfy, release, files):  # noqa: F811
    """The drift that was: the CLI gave softmax on lite lite's 0.03, the node 1.0."""
    pack, _ = comfy
    folder, content, style = files
    loaded = load(pack)
    api = {t: pixels(stylize(loaded.model, loaded.stylizer.encoder, content, style,
                             options=StylizeOptions(attention=AttentionSpec("softmax", t, LITE_GLOBAL_SHARE))))
           for t in (1.0, 0.03)}  # fmt: skip
    assert not torch.equal(api[1.0], api[0.03])  # the test can tell the two apart
    out = folder / "cli.png"
    assert main([str(a) for a in ["stylize", "--content", folder / "content.png", "--style", folder / "style.png",
                                  "-o", out, "--encoder", release["out"] / "vgg_normalised.safetensors", "--model",
                                  release["out"] / "adain_decoder.safetensors", "--attention", "softmax",
                                  "--style-max-side", 0, "--device", "cpu", "--quiet"]]) == 0  # fmt: skip
    assert torch.equal(pixels(load_image(out)[0]), api[1.0])
    got = run(pack, "AdaAttNStylize", model=loaded, content=as_image(content), style=as_image(style),
              style_max_side=0, attention="softmax")  # fmt: skip
    assert torch.equal(pixels(got.movedim(-1, 1)), api[1.0])
    chosen = StylizeOptions(attention="softmax")
    assert torch.equal(pixels(stylize(loaded.model, loaded.stylizer.encoder, content, style, options=chosen)), api[1.0])


# --- the cache where users meet it: the loaded model of the nodes, one command run -------------------


def test_node_slider_changes_reuse_the_loaded_models_encodings(comfy):  # noqa: F811
    pack, _ = comfy
    loaded = load(pack)
    content, style = as_image(rand_images(1, 3, 32, 48, seed=1)), as_image(rand_images(1, 3, 40, 40, seed=2))
    both = {"model": loaded, "content": content, "style": style, "style_max_side": 0}
    run(pack, "AdaAttNStylize", **both)
    run(pack, "AdaAttNStylize", **both, strength=0.4, preserve_color="luminance", attention="softmax", temperature=0.5)
    assert loaded.stylizer.cache.encodes == 2  # placed again through the memory manager, and still cached
    clip = {"model": loaded, "frames": content, "style": style, "style_max_side": 0, "temporal_smoothing": 0.0,
            "frames_per_chunk": 1}  # fmt: skip
    run(pack, "AdaAttNStylizeFrames", **clip)
    run(pack, "AdaAttNStylizeFrames", **clip, strength=0.5)
    assert loaded.stylizer.cache.encodes == 2  # the frame path takes the style from the same cache


def test_one_command_run_encodes_each_image_once(models_dir_files, monkeypatch, tmp_path):
    from adaattn_model.vgg import VGGEncoder

    calls = []
    real = VGGEncoder.stages

    def stages(self, image, upto="relu5_1", **kwargs):
        calls.append(tuple(image.shape))
        return real(self, image, upto, **kwargs)

    monkeypatch.setattr(VGGEncoder, "stages", stages)
    folder, encoder, model = models_dir_files
    argv = ["stylize", "--content", folder / "c1.png", folder / "c2.png", "--style", folder / "s1.png",
            folder / "s2.png", "-o", tmp_path / "out", "--encoder", encoder, "--model", model, "--alpha", 0.5,
            "--device", "cpu", "--quiet"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    assert len(list((tmp_path / "out").iterdir())) == 4 and len(calls) == 4  # each of 2 contents, 2 styles once


@pytest.fixture
def models_dir_files(release, tmp_path):
    for i in (1, 2):
        save_image(rand_images(1, 3, 32, 40, seed=30 + i), tmp_path / f"c{i}.png")
        save_image(rand_images(1, 3, 36, 36, seed=40 + i), tmp_path / f"s{i}.png")
    return tmp_path, release["out"] / "vgg_normalised.safetensors", release["out"] / "adain_decoder.safetensors"


def test_one_cache_never_mixes_two_encoders(models):
    cache = EncodingCache()
    other = _copy(models["encoder"])
    with torch.no_grad():
        other.conv1_1.weight.mul_(1.5)
    a = stylize(models["lite"], models["encoder"], CONTENT, STYLE, cache=cache)
    b = stylize(models["lite"], other, CONTENT, STYLE, cache=cache)
    assert cache.encodes == 4 and not torch.equal(a, b)
    assert torch.equal(b, stylize(models["lite"], other, CONTENT, STYLE))


def test_auto_dtype_is_float32_off_cuda_and_float16_on_cuda():
    from adaattn_model.tools.stylize import resolve_dtype

    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) is torch.float16
    assert resolve_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16
