"""Node classes called directly, with tiny random-weight models and stub ComfyUI modules."""

from __future__ import annotations

import shutil
import subprocess
import sys

import comfy_stubs
import pytest
import torch
from conftest import rand_images
from node_calls import call_node, first, node_inputs

MODEL_FILES = ("vgg_normalised.safetensors", "adain_decoder.safetensors", "adaattn_official.safetensors",
               "adaattn_official_video.safetensors")  # fmt: skip


@pytest.fixture
def comfy(release, tmp_path, monkeypatch):
    """The pack imported as ComfyUI would, against stub ComfyUI modules; weights in models/adaattn."""
    monkeypatch.delenv("ADAATTN_MODELS", raising=False)
    folder = tmp_path / "models" / "adaattn"
    folder.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copy(release["out"] / name, folder / name)
    (folder / "notes.txt").write_text("not weights")
    (folder / "broken.safetensors").write_bytes(b"broken")
    host, modules = comfy_stubs.build(tmp_path / "models")
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    pack = comfy_stubs.import_pack()
    yield pack, host
    for name in [n for n in sys.modules if n.startswith(comfy_stubs.PACK)]:
        monkeypatch.delitem(sys.modules, name, raising=False)


def run(pack, node_id, **inputs):
    """The first output of node ``node_id``, called by keyword with its widget defaults."""
    return first(pack.NODE_CLASS_MAPPINGS[node_id], **inputs)


def load(pack, model="adain_decoder.safetensors"):
    return run(pack, "AdaAttNLoader", encoder_name="vgg_normalised.safetensors", model_name=model, dtype="float32")


def encode(pack, model, content=None, style=None):
    """Content and/or style features (the one that is given; both as a pair when both are)."""
    c = run(pack, "AdaAttNEncodeContent", model=model, image=content) if content is not None else None
    s = run(pack, "AdaAttNEncodeStyle", model=model, image=style, max_side=0) if style is not None else None
    return c if style is None else s if content is None else (c, s)


def as_image(rgb):
    return rgb.movedim(1, -1).contiguous()


# --- registration, documentation, socket types ---------------------------------------------------

PACK_TYPES = {"ADAATTN_MODEL", "ADAATTN_CONTENT", "ADAATTN_STYLE"}
# Widgets most users never change: shown under the node's advanced inputs.
ADVANCED = {
    "AdaAttNStylize": {"temperature", "sampling", "sample_seed", "tile_size", "global_share", "detail"},
    "AdaAttNStylizeFrames": {"temperature", "sampling", "sample_seed", "change_threshold", "shared_normalization",
                             "scene_cut_threshold", "frames_per_chunk", "global_share", "detail"},
    "AdaAttNAttention": {"temperature", "sampling", "sample_seed", "global_share"},
    "AdaAttNEncodeContent": {"max_side"},
    "AdaAttNEncodeStyle": set(),
    "AdaAttNBlendStyles": set(),
    "AdaAttNDecode": {"detail"},
    "AdaAttNColorTransfer": set(),
    "AdaAttNLoadFrames": set(),
    "AdaAttNMetrics": {"long_range", "style_max_side"},
}  # fmt: skip


def inputs_of(cls) -> dict:
    spec = cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def link_accepted(output_type: str, input_type: str) -> bool:
    """ComfyUI's rule for a link (comfy_execution/validation.py): equal, '*', or overlapping comma-separated sets."""
    if output_type == input_type or "*" in (output_type, input_type):
        return True
    return bool({t.strip() for t in output_type.split(",")} & {t.strip() for t in input_type.split(",")})


def test_every_node_is_documented(comfy):
    pack, _ = comfy
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("AdaAttN")
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[node_id]
        assert cls.CATEGORY == "style_transfer/AdaAttN"
        assert len(cls.DESCRIPTION) > 40, node_id
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        assert callable(getattr(cls, cls.FUNCTION))
        for name, (kind, options) in inputs_of(cls).items():
            assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
            if isinstance(kind, list) and "default" in options:
                assert options["default"] in kind


def test_one_table_gives_ids_titles_and_search_aliases(comfy):
    pack, _ = comfy
    registry = sys.modules[f"{comfy_stubs.PACK}.nodes.registry"]
    rows = registry.available()
    assert set(registry.NODES) - set(rows) == {"AdaAttNStylizeVideo"}  # these stubs have no comfy_api
    assert list(pack.NODE_CLASS_MAPPINGS) == list(rows)
    for node_id, entry in rows.items():
        assert pack.NODE_CLASS_MAPPINGS[node_id] is entry.cls
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[node_id] == entry.title
        assert entry.cls.SEARCH_ALIASES == list(entry.aliases)  # what ComfyUI serves as search_aliases
        assert getattr(entry.cls, "DEPRECATED", False) or entry.aliases, f"{node_id} has no search aliases"
    assert len({e.title for e in registry.NODES.values()}) == len(registry.NODES)  # titles are distinct
    # every node class the pack defines is in the table (a class left out would never be registered)
    defined = {
        obj
        for name, module in sys.modules.items()
        if name.startswith(f"{comfy_stubs.PACK}.nodes.")
        for obj in vars(module).values()
        if isinstance(obj, type) and obj.__module__ == name and hasattr(obj, "INPUT_TYPES") and hasattr(obj, "FUNCTION")
    }
    assert defined == {e.cls for e in registry.NODES.values()}


def test_rarely_changed_widgets_are_advanced(comfy):
    pack, _ = comfy
    for node_id, expected in ADVANCED.items():
        advanced = {name for name, (_, options) in inputs_of(pack.NODE_CLASS_MAPPINGS[node_id]).items()
                    if options.get("advanced")}  # fmt: skip
        assert advanced == expected, node_id
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():  # a socket is never tucked away
        for name, (kind, options) in inputs_of(cls).items():
            is_socket = isinstance(kind, str) and kind in {*PACK_TYPES, "IMAGE", "MASK"}
            assert not (options.get("advanced") and is_socket), f"{node_id}.{name}"


def test_socket_types_keep_content_and_style_apart(comfy):
    """What the canvas lets each output of the pack's types connect to (ComfyUI's own link rule)."""
    pack, _ = comfy
    current = {k: c for k, c in pack.NODE_CLASS_MAPPINGS.items() if not getattr(c, "DEPRECATED", False)}
    inputs = [(f"{node_id}.{name}", kind) for node_id, cls in current.items()
              for name, (kind, _) in inputs_of(cls).items()
              if isinstance(kind, str) and kind in PACK_TYPES]  # fmt: skip
    reach = {}
    for node_id, cls in current.items():
        for out_type, out_name in zip(cls.RETURN_TYPES, cls.RETURN_NAMES):
            if out_type in PACK_TYPES:
                reach[f"{node_id}.{out_name}"] = {where for where, kind in inputs if link_accepted(out_type, kind)}
    content_inputs = {"AdaAttNAttention.content", "AdaAttNDecode.features"}
    style_inputs = {"AdaAttNAttention.style"} | {f"AdaAttNBlendStyles.style_{i}" for i in range(1, 5)}
    assert reach["AdaAttNEncodeContent.content"] == content_inputs
    assert reach["AdaAttNAttention.content"] == content_inputs  # chainable
    assert reach["AdaAttNEncodeStyle.style"] == style_inputs
    assert reach["AdaAttNBlendStyles.style"] == style_inputs  # nesting is a run-time error (below)
    assert reach["AdaAttNLoader.model"] == {where for where, kind in inputs if kind == "ADAATTN_MODEL"}
    assert {"AdaAttNStylize.model", "AdaAttNEncodeStyle.model", "AdaAttNDecode.model"} <= reach["AdaAttNLoader.model"]
    # the deprecated two-way Encode still links to both, so workflows saved with it keep validating
    legacy = pack.NODE_CLASS_MAPPINGS["AdaAttNEncode"].RETURN_TYPES[0]
    assert link_accepted(legacy, "ADAATTN_CONTENT") and link_accepted(legacy, "ADAATTN_STYLE")


def test_call_node_fills_defaults_and_rejects_unknown_inputs(comfy):
    pack, _ = comfy
    cls = pack.NODE_CLASS_MAPPINGS["AdaAttNAttention"]
    kwargs = node_inputs(cls, model="m", content="c", style="s", strength=0.5)
    assert kwargs == {"model": "m", "content": "c", "style": "s", "layer": "relu4_1", "attention": "auto",
                      "temperature": 0.0, "sampling": "exact", "sample_seed": 6666, "strength": 0.5,
                      "global_share": -1.0}  # fmt: skip
    with pytest.raises(TypeError, match="needs its required input 'style'"):
        node_inputs(cls, model="m", content="c")
    with pytest.raises(TypeError, match="has no input streng"):
        node_inputs(cls, model="m", content="c", style="s", streng=1)


def test_model_folder_lists_only_safetensors(comfy, tmp_path):
    pack, _ = comfy
    import folder_paths

    paths, exts = folder_paths.folder_names_and_paths["adaattn"]
    assert exts == {".safetensors"} and paths[0] == str(tmp_path / "models" / "adaattn")
    spec = pack.NODE_CLASS_MAPPINGS["AdaAttNLoader"].INPUT_TYPES()["required"]
    assert spec["encoder_name"][0] == ["vgg_normalised.safetensors"]
    # recognised by content, ordered image, lite, video; broken and non-weight files left out
    assert spec["model_name"][0] == [
        "adaattn_official.safetensors", "adain_decoder.safetensors", "adaattn_official_video.safetensors",
    ]  # fmt: skip


def test_user_defined_folder_is_extended_not_replaced(release, tmp_path, monkeypatch):
    host, modules = comfy_stubs.build(tmp_path)
    modules["folder_paths"].folder_names_and_paths["adaattn"] = (["/shared/adaattn"], set())
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    comfy_stubs.import_pack()
    paths, exts = modules["folder_paths"].folder_names_and_paths["adaattn"]
    assert paths[0] == "/shared/adaattn" and str(tmp_path / "adaattn") in paths and exts == {".safetensors"}


def test_missing_weights_message_names_folder_and_command(comfy, tmp_path):
    pack, _ = comfy
    cls = pack.NODE_CLASS_MAPPINGS["AdaAttNLoader"]
    names = {"encoder_name": "vgg_normalised.safetensors", "dtype": "float32"}
    assert cls.VALIDATE_INPUTS(**names, model_name="adain_decoder.safetensors") is True
    message = cls.VALIDATE_INPUTS(**names, model_name="nope.safetensors")
    assert str(tmp_path / "models" / "adaattn") in message and "python -m adaattn_model fetch" in message


def test_importing_the_pack_without_comfyui_is_harmless():
    code = "import importlib.util, sys; " \
           "s = importlib.util.spec_from_file_location('p', 'ROOT/__init__.py', submodule_search_locations=['ROOT']); " \
           "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); " \
           "assert m.NODE_CLASS_MAPPINGS == {} and 'torch' not in sys.modules; print('ok')"  # fmt: skip
    code = code.replace("ROOT", str(comfy_stubs.ROOT))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_model_package_never_imports_comfyui():
    code = "import sys, adaattn_model.pipeline, adaattn_model.tools.cli, adaattn_model.metrics; " \
           "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'nodes', 'server')]; " \
           "assert not bad, bad; print('ok')"  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=comfy_stubs.ROOT)
    assert result.stdout.strip() == "ok", result.stderr


# --- running the nodes -----------------------------------------------------------------------------


def test_composable_graph_equals_all_in_one(comfy):
    pack, host = comfy
    model = load(pack, "adaattn_official.safetensors")
    content = as_image(rand_images(2, 3, 40, 56, seed=1))
    style = as_image(rand_images(1, 3, 48, 48, seed=2))
    before = content.clone(), style.clone()
    c, s = encode(pack, model, content, style)
    for layer in ("relu3_1", "relu4_1", "relu5_1"):
        c = run(pack, "AdaAttNAttention", model=model, content=c, style=s, layer=layer)
    composed = run(pack, "AdaAttNDecode", model=model, features=c)
    direct = run(pack, "AdaAttNStylize", model=model, content=content, style=style, style_max_side=0)
    assert composed.shape == (2, 40, 56, 3) and composed.dtype == torch.float32
    torch.testing.assert_close(composed, direct)
    assert torch.equal(content, before[0]) and torch.equal(style, before[1])  # inputs untouched
    assert host.loads and all(force for _, _, force in host.loads)  # placed through the memory manager


def test_composable_graph_equals_all_in_one_with_lites_share_and_detail(comfy):
    """lite's defaults reach both paths: the share in Attention, the content's detail in Decode."""
    pack, _ = comfy
    model = load(pack)
    content = as_image(rand_images(1, 3, 40, 56, seed=3))
    style = as_image(rand_images(1, 3, 48, 48, seed=4))
    c, s = encode(pack, model, content, style)
    stylised = run(pack, "AdaAttNAttention", model=model, content=c, style=s)
    composed = run(pack, "AdaAttNDecode", model=model, features=stylised)
    direct = run(pack, "AdaAttNStylize", model=model, content=content, style=style, style_max_side=0)
    torch.testing.assert_close(composed, direct)
    plain = run(pack, "AdaAttNStylize", model=model, content=content, style=style, style_max_side=0,
                global_share=0.0, detail=0.0)  # fmt: skip
    unshared = run(pack, "AdaAttNAttention", model=model, content=c, style=s, global_share=0.0)
    no_detail = run(pack, "AdaAttNDecode", model=model, features=unshared, detail=0.0)
    torch.testing.assert_close(no_detail, plain)
    assert (plain - direct).abs().max() > 1e-2  # the defaults change the picture
    with pytest.raises(ValueError, match="detail must be in"):
        run(pack, "AdaAttNDecode", model=model, features=stylised, detail=1.5)


def test_deprecated_two_way_encode_equals_the_typed_encoders(comfy):
    pack, _ = comfy
    model = load(pack)
    content, style = as_image(rand_images(1, 3, 36, 44, seed=1)), as_image(rand_images(1, 3, 40, 40, seed=2))
    old = {role: run(pack, "AdaAttNEncode", model=model, image=image, use_as=role, max_side=0)
           for role, image in (("content", content), ("style", style))}  # fmt: skip
    c, s = encode(pack, model, content, style)
    for new, legacy in ((c, old["content"]), (s, old["style"])):
        assert new.role == legacy.role and new.encoded.size == legacy.encoded.size
        for layer, value in new.encoded.features.items():
            torch.testing.assert_close(legacy.encoded.features[layer], value)
    out = run(pack, "AdaAttNAttention", model=model, content=old["content"], style=old["style"])
    torch.testing.assert_close(out.stylised["relu4_1"],
                               run(pack, "AdaAttNAttention", model=model, content=c, style=s).stylised["relu4_1"])


def test_chaining_a_subset_of_layers(comfy):
    pack, _ = comfy
    model = load(pack, "adaattn_official.safetensors")
    c, s = encode(pack, model, as_image(rand_images(1, 3, 32, 32)), as_image(rand_images(1, 3, 32, 32, seed=3)))
    one = run(pack, "AdaAttNDecode", model=model,
              features=run(pack, "AdaAttNAttention", model=model, content=c, style=s, layer="relu4_1"))  # fmt: skip
    none = run(pack, "AdaAttNDecode", model=model, features=c)
    assert (one - none).abs().max() > 1e-3
    assert c.stylised == {}  # the input features object was not changed


def test_layer_the_family_lacks_is_a_clear_error(comfy):
    pack, _ = comfy
    model = load(pack)
    c, s = encode(pack, model, as_image(rand_images(1, 3, 32, 32)), as_image(rand_images(1, 3, 32, 32, seed=1)))
    with pytest.raises(ValueError, match="the lite model has no AdaAttN at relu5_1; it uses relu4_1"):
        run(pack, "AdaAttNAttention", model=model, content=c, style=s, layer="relu5_1")


def test_miswired_features_are_clear_errors(comfy):
    """What the canvas refuses by socket type, API workflows and the deprecated Encode can still send."""
    pack, _ = comfy
    model = load(pack)
    c, s = encode(pack, model, as_image(rand_images(1, 3, 32, 32)), as_image(rand_images(1, 3, 32, 32, seed=1)))
    attend = lambda content, style: run(pack, "AdaAttNAttention", model=model, content=content, style=style)
    with pytest.raises(ValueError, match="content got style features: connect AdaAttN Encode Content"):
        attend(s, s)
    with pytest.raises(ValueError, match="style got content features: connect AdaAttN Encode Style"):
        attend(c, c)
    with pytest.raises(ValueError, match="features got style features"):
        run(pack, "AdaAttNDecode", model=model, features=s)
    blend = run(pack, "AdaAttNBlendStyles", style_1=s, style_2=s)
    with pytest.raises(ValueError, match="content got style features"):
        attend(blend, s)
    with pytest.raises(ValueError, match="style_1 is a blend, and blends do not nest"):
        run(pack, "AdaAttNBlendStyles", style_1=blend, style_2=s)
    with pytest.raises(ValueError, match="style_2 must be style features from AdaAttN Encode Style"):
        run(pack, "AdaAttNBlendStyles", style_1=s, style_2=c)


@pytest.mark.parametrize("channels", [1, 4])
def test_gray_and_rgba_images(comfy, channels):
    pack, _ = comfy
    model = load(pack)
    image = torch.rand(1, 24, 40, channels)
    assert run(pack, "AdaAttNStylize", model=model, content=image, style=image).shape == (1, 24, 40, 3)


def test_blend_node_weights_and_regions(comfy):
    pack, _ = comfy
    model = load(pack)
    c = encode(pack, model, content=as_image(rand_images(1, 3, 32, 48)))
    s1 = encode(pack, model, style=as_image(rand_images(1, 3, 32, 32, seed=4)))
    s2 = encode(pack, model, style=as_image(rand_images(1, 3, 40, 40, seed=5)))
    blend = lambda **inputs: run(pack, "AdaAttNBlendStyles", style_1=s1, style_2=s2, **inputs)
    attend = lambda style: run(pack, "AdaAttNAttention", model=model, content=c, style=style).stylised["relu4_1"]
    only1 = attend(s1)
    torch.testing.assert_close(attend(blend(weight_2=0.0)), only1)
    left = torch.zeros(1, 32, 48)
    left[..., :24] = 1
    out = attend(blend(region_1=left, region_2=1 - left))
    torch.testing.assert_close(out[..., :2], only1[..., :2])
    with pytest.raises(ValueError, match="different aspect ratio"):
        attend(blend(region_1=torch.ones(1, 64, 64)))
    with pytest.raises(ValueError, match="region_3 is connected but style_3 is not"):
        blend(region_3=left)


def test_masks_on_the_attention_node(comfy):
    pack, _ = comfy
    model = load(pack)
    c, s = encode(pack, model, as_image(rand_images(1, 3, 32, 32)), as_image(rand_images(1, 3, 32, 32, seed=4)))
    attend = lambda **masks: run(pack, "AdaAttNAttention", model=model, content=c, style=s, **masks).stylised["relu4_1"]
    kept = attend(content_mask=torch.zeros(1, 64, 64))
    torch.testing.assert_close(kept, c.encoded.features["relu4_1"])  # mask resized: 64 -> 32
    half = torch.zeros(1, 32, 32)
    half[:, :16] = 1
    assert (attend(style_mask=half) - attend()).abs().max() > 1e-4


def test_batches_broadcast_pair_or_fail(comfy):
    pack, _ = comfy
    model = load(pack)
    contents = as_image(rand_images(3, 3, 32, 32))
    stylize = lambda styles: run(pack, "AdaAttNStylize", model=model, content=contents, style=styles)
    assert stylize(as_image(rand_images(1, 3, 32, 32))).shape[0] == 3
    assert stylize(as_image(rand_images(3, 3, 32, 32))).shape[0] == 3
    with pytest.raises(ValueError, match="2 style images for 3 content images.*AdaAttN Blend Styles"):
        stylize(as_image(rand_images(2, 3, 32, 32)))


@pytest.mark.parametrize("mode", ["luminance", "match"])
def test_colour_preservation(comfy, mode):
    pack, _ = comfy
    model = load(pack)
    content, style = as_image(rand_images(1, 3, 32, 32)), as_image(rand_images(1, 3, 32, 32, seed=6))
    out = run(pack, "AdaAttNStylize", model=model, content=content, style=style, preserve_color=mode)
    assert out.shape == content.shape and 0 <= out.min() and out.max() <= 1
    recoloured = run(pack, "AdaAttNColorTransfer", image=style, reference=content, mode=mode)
    assert recoloured.shape == style.shape


def test_frames_progress_within_chunks_and_same_as_single_images(comfy):
    pack, host = comfy
    model = load(pack, "adaattn_official_video.safetensors")
    frames, style = as_image(rand_images(5, 3, 32, 48)), as_image(rand_images(1, 3, 40, 40, seed=7))
    out = run(pack, "AdaAttNStylizeFrames", model=model, frames=frames, style=style, style_max_side=0,
              temporal_smoothing=0.0, shared_normalization=0.0, frames_per_chunk=2)  # fmt: skip
    assert host.progress[-1][0] == host.progress[-1][1] and len(host.progress) > 3 * 13  # steps within chunks
    single = run(pack, "AdaAttNStylize", model=model, content=frames[3:4], style=style, style_max_side=0)
    torch.testing.assert_close(out[3:4], single)


def test_frames_can_be_interrupted(comfy):
    pack, host = comfy
    model = load(pack)
    host.interrupt_after = 2
    with pytest.raises(comfy_stubs.InterruptProcessingException):
        run(pack, "AdaAttNStylizeFrames", model=model, frames=as_image(rand_images(6, 3, 32, 32)),
            style=as_image(rand_images(1, 3, 32, 32)), temporal_smoothing=0.9, frames_per_chunk=1)  # fmt: skip
    assert host.checks == 2


def test_out_of_memory_halves_the_frame_chunk(comfy, monkeypatch):
    pack, host = comfy
    model = load(pack)
    module = sys.modules[f"{comfy_stubs.PACK}.adaattn_model.frames"]
    real, sizes = module.encode_content, []

    def flaky(encoder, images, layers, **kwargs):
        sizes.append(images.shape[0])
        if images.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(encoder, images, layers, **kwargs)

    monkeypatch.setattr(module, "encode_content", flaky)
    frames = as_image(rand_images(6, 3, 32, 32))
    stylize = lambda chunk: run(pack, "AdaAttNStylizeFrames", model=model, frames=frames, style=frames[:1],
                                temporal_smoothing=0.9, shared_normalization=0.5, frames_per_chunk=chunk)  # fmt: skip
    out = stylize(8)
    assert out.shape == frames.shape and sizes == [6, 4, 2, 2, 2]  # 8 -> 6 frames, OOM, 4, OOM, 2 x 3
    assert host.progress[-1][0] == host.progress[-1][1]  # the bar ends full after the retries
    monkeypatch.setattr(module, "encode_content", real)
    torch.testing.assert_close(out, stylize(2))  # the failed tries left the stabiliser state untouched


def test_metrics_node(comfy):
    pack, _ = comfy
    model = load(pack)
    frames = as_image(rand_images(4, 3, 32, 32, seed=1))
    metrics_node = pack.NODE_CLASS_MAPPINGS["AdaAttNMetrics"]
    report = call_node(metrics_node, model=model, result=frames, content=frames, long_range=2, style=frames[:1])
    metrics = __import__("json").loads(report["result"][0])
    assert report["ui"]["text"][0] == report["result"][0]
    assert metrics["ssim"] == pytest.approx(1.0) and metrics["content_loss"] == 0.0
    assert metrics["frame_difference_error"] == 0.0 and metrics["images"] == 4 and metrics["style_loss"] >= 0
    with pytest.raises(ValueError, match="same count and size"):
        call_node(metrics_node, model=model, result=frames, content=frames[:2])


def test_load_frames_node(comfy, tmp_path):
    pack, _ = comfy
    folder = tmp_path / "input" / "clip"
    folder.mkdir(parents=True)
    from PIL import Image

    for i in range(5):
        Image.new("RGB", (20, 10), (i * 40, 0, 0)).save(folder / f"f_{i:03d}.png")
    (folder / "notes.txt").write_text("not a frame")
    load_frames = pack.NODE_CLASS_MAPPINGS["AdaAttNLoadFrames"]
    frames, names = call_node(load_frames, folder="clip")
    assert frames.shape == (5, 10, 20, 3) and names.splitlines()[0] == "f_000.png"
    frames, names = call_node(load_frames, folder="clip", first=1, count=2)
    assert names == "f_001.png\nf_002.png" and frames[0, 0, 0, 0].item() == pytest.approx(40 / 255)
    before = load_frames.IS_CHANGED(folder="clip", first=0, count=0)
    Image.new("RGB", (20, 12)).save(folder / "f_009.png")
    assert load_frames.IS_CHANGED(folder="clip", first=0, count=0) != before
    with pytest.raises(ValueError, match="f_009.png is 20x12 but f_000.png is 20x10"):
        call_node(load_frames, folder="clip")
    for bad in ("../clip", "/etc", ""):
        with pytest.raises(ValueError, match="subfolder of ComfyUI's input directory"):
            call_node(load_frames, folder=bad)
    with pytest.raises(ValueError, match="no frames in 'clip' from index 40"):
        call_node(load_frames, folder="clip", first=40)


def test_stylize_node_tile_size_gives_the_untiled_picture(comfy):
    """The tile_size widget forces tiling; the picture is the untiled one to float32 round-off."""
    pack, _ = comfy
    model = load(pack)
    content = torch.rand(1, 70, 90, 3, generator=torch.Generator().manual_seed(3))
    style = torch.rand(1, 40, 50, 3, generator=torch.Generator().manual_seed(4))
    plain = run(pack, "AdaAttNStylize", model=model, content=content, style=style)
    tiled = run(pack, "AdaAttNStylize", model=model, content=content, style=style, tile_size=48)
    assert tiled.shape == plain.shape
    assert (tiled - plain).abs().max().item() < 1e-4
