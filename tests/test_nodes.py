"""Node classes called directly, with tiny random-weight models and stub ComfyUI modules."""

from __future__ import annotations

import shutil
import subprocess
import sys

import comfy_stubs
import pytest
import torch
from conftest import rand_images

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


def node(pack, name):
    return pack.NODE_CLASS_MAPPINGS[name]()


def load(pack, model="adain_decoder.safetensors", dtype="float32"):
    return node(pack, "AdaAttNLoader").load("vgg_normalised.safetensors", model, dtype)[0]


def as_image(rgb):
    return rgb.movedim(1, -1).contiguous()


# --- registration and documentation ------------------------------------------------------------


def test_every_node_is_documented(comfy):
    pack, _ = comfy
    assert len(pack.NODE_CLASS_MAPPINGS) == 10
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("AdaAttN")
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[node_id]
        assert cls.CATEGORY == "style_transfer/AdaAttN"
        assert len(cls.DESCRIPTION) > 40, node_id
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        assert callable(getattr(cls, cls.FUNCTION))
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (kind, options) in spec.get(section, {}).items():
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
                if isinstance(kind, list) and "default" in options:
                    assert options["default"] in kind


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
    assert cls.VALIDATE_INPUTS("vgg_normalised.safetensors", "adain_decoder.safetensors", "float32") is True
    message = cls.VALIDATE_INPUTS("vgg_normalised.safetensors", "nope.safetensors", "float32")
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
    encode, attend = node(pack, "AdaAttNEncode"), node(pack, "AdaAttNAttention")
    c = encode.encode(model, content, "content", 0)[0]
    s = encode.encode(model, style, "style", 0)[0]
    for layer in ("relu3_1", "relu4_1", "relu5_1"):
        c = attend.apply(model, c, s, layer, "auto", 0.0, "exact", 6666, 1.0)[0]
    composed = node(pack, "AdaAttNDecode").decode(model, c)[0]
    direct = node(pack, "AdaAttNStylize").stylize(model, content, style, 1.0, 0, "none", "auto", 0.0, "exact", 6666)[0]
    assert composed.shape == (2, 40, 56, 3) and composed.dtype == torch.float32
    torch.testing.assert_close(composed, direct)
    assert torch.equal(content, before[0]) and torch.equal(style, before[1])  # inputs untouched
    assert host.loads and all(force for _, _, force in host.loads)  # placed through the memory manager


def test_chaining_a_subset_of_layers(comfy):
    pack, _ = comfy
    model = load(pack, "adaattn_official.safetensors")
    encode, attend, decode = node(pack, "AdaAttNEncode"), node(pack, "AdaAttNAttention"), node(pack, "AdaAttNDecode")
    c = encode.encode(model, as_image(rand_images(1, 3, 32, 32)), "content", 0)[0]
    s = encode.encode(model, as_image(rand_images(1, 3, 32, 32, seed=3)), "style", 0)[0]
    one = decode.decode(model, attend.apply(model, c, s, "relu4_1", "auto", 0.0, "exact", 0, 1.0)[0])[0]
    none = decode.decode(model, c)[0]
    assert (one - none).abs().max() > 1e-3
    assert c.stylised == {}  # the input features object was not changed


def test_layer_the_family_lacks_is_a_clear_error(comfy):
    pack, _ = comfy
    model = load(pack)
    encode = node(pack, "AdaAttNEncode")
    c = encode.encode(model, as_image(rand_images(1, 3, 32, 32)), "content", 0)[0]
    with pytest.raises(ValueError, match="the lite model has no AdaAttN at relu5_1; it uses relu4_1"):
        node(pack, "AdaAttNAttention").apply(model, c, c, "relu5_1", "auto", 0.0, "exact", 0, 1.0)


def test_style_features_cannot_be_decoded(comfy):
    pack, _ = comfy
    model = load(pack)
    s = node(pack, "AdaAttNEncode").encode(model, as_image(rand_images(1, 3, 32, 32)), "style", 0)[0]
    with pytest.raises(ValueError, match="use_as = content"):
        node(pack, "AdaAttNDecode").decode(model, s)


@pytest.mark.parametrize("channels", [1, 4])
def test_gray_and_rgba_images(comfy, channels):
    pack, _ = comfy
    model = load(pack)
    image = torch.rand(1, 24, 40, channels)
    out = node(pack, "AdaAttNStylize").stylize(model, image, image, 1.0, 0, "none", "auto", 0.0, "exact", 0)[0]
    assert out.shape == (1, 24, 40, 3)


def test_blend_node_weights_and_regions(comfy):
    pack, _ = comfy
    model = load(pack)
    encode, attend, blend = node(pack, "AdaAttNEncode"), node(pack, "AdaAttNAttention"), node(pack, "AdaAttNBlendStyles")
    c = encode.encode(model, as_image(rand_images(1, 3, 32, 48)), "content", 0)[0]
    s1 = encode.encode(model, as_image(rand_images(1, 3, 32, 32, seed=4)), "style", 0)[0]
    s2 = encode.encode(model, as_image(rand_images(1, 3, 40, 40, seed=5)), "style", 0)[0]
    run = lambda style: attend.apply(model, c, style, "relu4_1", "auto", 0.0, "exact", 0, 1.0)[0].stylised["relu4_1"]
    only1 = run(s1)
    torch.testing.assert_close(run(blend.blend("mix", style_1=s1, weight_1=1.0, style_2=s2, weight_2=0.0)[0]), only1)
    left = torch.zeros(1, 32, 48)
    left[..., :24] = 1
    regional = blend.blend("mix", style_1=s1, weight_1=1.0, style_2=s2, weight_2=1.0, region_1=left, region_2=1 - left)[0]
    out = run(regional)
    torch.testing.assert_close(out[..., :2], only1[..., :2])
    with pytest.raises(ValueError, match="different aspect ratio"):
        run(blend.blend("mix", style_1=s1, weight_1=1.0, style_2=s2, weight_2=1.0, region_1=torch.ones(1, 64, 64))[0])
    with pytest.raises(ValueError, match="region_3 is connected but style_3 is not"):
        blend.blend("mix", style_1=s1, weight_1=1.0, style_2=s2, weight_2=1.0, region_3=left)


def test_masks_on_the_attention_node(comfy):
    pack, _ = comfy
    model = load(pack)
    encode, attend = node(pack, "AdaAttNEncode"), node(pack, "AdaAttNAttention")
    c = encode.encode(model, as_image(rand_images(1, 3, 32, 32)), "content", 0)[0]
    s = encode.encode(model, as_image(rand_images(1, 3, 32, 32, seed=4)), "style", 0)[0]
    kept = attend.apply(model, c, s, "relu4_1", "auto", 0.0, "exact", 0, 1.0, content_mask=torch.zeros(1, 64, 64))[0]
    torch.testing.assert_close(kept.stylised["relu4_1"], c.encoded.features["relu4_1"])  # mask resized: 64 -> 32
    half = torch.zeros(1, 32, 32)
    half[:, :16] = 1
    masked = attend.apply(model, c, s, "relu4_1", "auto", 0.0, "exact", 0, 1.0, style_mask=half)[0]
    full = attend.apply(model, c, s, "relu4_1", "auto", 0.0, "exact", 0, 1.0)[0]
    assert (masked.stylised["relu4_1"] - full.stylised["relu4_1"]).abs().max() > 1e-4


def test_batches_broadcast_pair_or_fail(comfy):
    pack, _ = comfy
    model = load(pack)
    stylize = node(pack, "AdaAttNStylize")
    contents = as_image(rand_images(3, 3, 32, 32))
    args = (1.0, 0, "none", "auto", 0.0, "exact", 0)
    assert stylize.stylize(model, contents, as_image(rand_images(1, 3, 32, 32)), *args)[0].shape[0] == 3
    assert stylize.stylize(model, contents, as_image(rand_images(3, 3, 32, 32)), *args)[0].shape[0] == 3
    with pytest.raises(ValueError, match="2 style images for 3 content images.*AdaAttN Blend Styles"):
        stylize.stylize(model, contents, as_image(rand_images(2, 3, 32, 32)), *args)


@pytest.mark.parametrize("mode", ["luminance", "match"])
def test_colour_preservation(comfy, mode):
    pack, _ = comfy
    model = load(pack)
    content, style = as_image(rand_images(1, 3, 32, 32)), as_image(rand_images(1, 3, 32, 32, seed=6))
    out = node(pack, "AdaAttNStylize").stylize(model, content, style, 1.0, 0, mode, "auto", 0.0, "exact", 0)[0]
    assert out.shape == content.shape and 0 <= out.min() and out.max() <= 1
    recoloured = node(pack, "AdaAttNColorTransfer").transfer(style, content, mode)[0]
    assert recoloured.shape == style.shape


def test_frames_progress_within_chunks_and_same_as_single_images(comfy):
    pack, host = comfy
    model = load(pack, "adaattn_official_video.safetensors")
    frames, style = as_image(rand_images(5, 3, 32, 48)), as_image(rand_images(1, 3, 40, 40, seed=7))
    out = node(pack, "AdaAttNStylizeFrames").stylize(model, frames, style, 1.0, 0, "auto", 0.0, "exact", 0, 0.0, 0.5,
                                                     0.0, 2)[0]
    assert host.progress[-1][0] == host.progress[-1][1] and len(host.progress) > 3 * 13  # steps within chunks
    single = node(pack, "AdaAttNStylize").stylize(model, frames[3:4], style, 1.0, 0, "none", "auto", 0.0, "exact", 0)[0]
    torch.testing.assert_close(out[3:4], single)


def test_frames_can_be_interrupted(comfy):
    pack, host = comfy
    model = load(pack)
    host.interrupt_after = 2
    with pytest.raises(comfy_stubs.InterruptProcessingException):
        node(pack, "AdaAttNStylizeFrames").stylize(
            model, as_image(rand_images(6, 3, 32, 32)), as_image(rand_images(1, 3, 32, 32)), 1.0, 0, "auto", 0.0,
            "exact", 0, 0.9, 0.5, 0.0, 1,
        )  # fmt: skip
    assert host.checks == 2


def test_out_of_memory_halves_the_frame_chunk(comfy, monkeypatch):
    pack, host = comfy
    model = load(pack)
    module = sys.modules[f"{comfy_stubs.PACK}.adaattn_model.frames"]
    real, sizes = module._encode_frames, []

    def flaky(encoder, images, layers, progress):
        sizes.append(images.shape[0])
        if images.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(encoder, images, layers, progress)

    monkeypatch.setattr(module, "_encode_frames", flaky)
    frames = as_image(rand_images(6, 3, 32, 32))
    stylize = node(pack, "AdaAttNStylizeFrames").stylize
    out = stylize(model, frames, frames[:1], 1.0, 0, "auto", 0.0, "exact", 0, 0.9, 0.5, 0.5, 8)[0]
    assert out.shape == frames.shape and sizes == [6, 4, 2, 2, 2]  # 8 -> 6 frames, OOM, 4, OOM, 2 x 3
    assert host.progress[-1][0] == host.progress[-1][1]  # the bar ends full after the retries
    monkeypatch.setattr(module, "_encode_frames", real)
    clean = stylize(model, frames, frames[:1], 1.0, 0, "auto", 0.0, "exact", 0, 0.9, 0.5, 0.5, 2)[0]
    torch.testing.assert_close(out, clean)  # the failed tries left the stabiliser state untouched


def test_metrics_node(comfy):
    pack, _ = comfy
    model = load(pack)
    frames = as_image(rand_images(4, 3, 32, 32, seed=1))
    report = node(pack, "AdaAttNMetrics").measure(model, frames, frames, 2, 0, style=frames[:1])
    metrics = __import__("json").loads(report["result"][0])
    assert report["ui"]["text"][0] == report["result"][0]
    assert metrics["ssim"] == pytest.approx(1.0) and metrics["content_loss"] == 0.0
    assert metrics["frame_difference_error"] == 0.0 and metrics["images"] == 4 and metrics["style_loss"] >= 0
    with pytest.raises(ValueError, match="same count and size"):
        node(pack, "AdaAttNMetrics").measure(model, frames, frames[:2], 2, 0)


def test_load_frames_node(comfy, tmp_path):
    pack, _ = comfy
    folder = tmp_path / "input" / "clip"
    folder.mkdir(parents=True)
    from PIL import Image

    for i in range(5):
        Image.new("RGB", (20, 10), (i * 40, 0, 0)).save(folder / f"f_{i:03d}.png")
    (folder / "notes.txt").write_text("not a frame")
    load = node(pack, "AdaAttNLoadFrames")
    frames, names = load.load("clip", 0, 0)
    assert frames.shape == (5, 10, 20, 3) and names.splitlines()[0] == "f_000.png"
    frames, names = load.load("clip", 1, 2)
    assert names == "f_001.png\nf_002.png" and frames[0, 0, 0, 0].item() == pytest.approx(40 / 255)
    before = load.IS_CHANGED("clip", 0, 0)
    Image.new("RGB", (20, 12)).save(folder / "f_009.png")
    assert load.IS_CHANGED("clip", 0, 0) != before
    with pytest.raises(ValueError, match="f_009.png is 20x12 but f_000.png is 20x10"):
        load.load("clip", 0, 0)
    for bad in ("../clip", "/etc", ""):
        with pytest.raises(ValueError, match="subfolder of ComfyUI's input directory"):
            load.load(bad, 0, 0)
    with pytest.raises(ValueError, match="no frames in 'clip' from index 40"):
        load.load("clip", 40, 0)
