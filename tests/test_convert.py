"""Converting released .pth weights: recognition, round trips, strictness, safety."""

from __future__ import annotations

import os
import pickle

import pytest
import synthetic
import torch

from adaattn_model.tools.convert import (
    ADAIN_DECODER_MAP,
    IMAGE_DECODER_MAP,
    TRANSFORMER_MAP,
    VGG_MAP,
    convert,
    source_shapes,
)
from adaattn_model.weights import WeightsError, read_weights


def test_release_tree_converts_to_three_files(release):
    out = release["out"]
    kinds = {p.name: read_weights(p)[0] for p in out.glob("*.safetensors")}
    assert kinds == {
        "vgg_normalised.safetensors": "vgg-encoder",
        "adaattn_official.safetensors": "official-image",
        "adaattn_official_video.safetensors": "official-video",
        "adain_decoder.safetensors": "lite",
    }


def test_round_trip_is_lossless_with_full_key_coverage(release):
    """Every released tensor lands, unchanged, under exactly one of our names (VGG conv5_2+ dropped)."""
    states, out = release["states"], release["out"]
    _, image, _ = read_weights(out / "adaattn_official.safetensors")
    _, video, _ = read_weights(out / "adaattn_official_video.safetensors")
    _, vgg, _ = read_weights(out / "vgg_normalised.safetensors")
    _, lite, _ = read_weights(out / "adain_decoder.safetensors")
    pairs = [
        (states["vgg"], VGG_MAP, "", vgg),
        (states["transformer"], TRANSFORMER_MAP, "", image),
        (states["image_decoder"], IMAGE_DECODER_MAP, "", image),
        (states["relu3_1_attention"], {p: f"attention.relu3_1.{p}" for p in "fgh"}, "", image),
        (states["video_relu3_1_attention"], {p: f"attention.relu3_1.{p}" for p in "fgh"}, "", video),
        (states["adain_decoder"], ADAIN_DECODER_MAP, "", lite),
    ]
    for state, table, _, ours in pairs:
        for key, value in state.items():
            prefix, param = key.rsplit(".", 1)
            if table[prefix] is None:
                assert prefix in ("45", "48", "51")
                continue
            assert torch.equal(ours[f"{table[prefix]}.{param}"], value), key
    assert len(image) == 6 + 14 + 18 and len(video) == 6 + 16 and len(vgg) == 28 and len(lite) == 18


def test_relu3_1_attention_joins_the_decoder_in_its_folder(release):
    """adaattn_3 (image) and the video transformer are indistinguishable by shape."""
    _, image, meta_i = read_weights(release["out"] / "adaattn_official.safetensors")
    _, video, meta_v = read_weights(release["out"] / "adaattn_official_video.safetensors")
    s = release["states"]
    assert torch.equal(image["attention.relu3_1.f.weight"], s["relu3_1_attention"]["f.weight"])
    assert torch.equal(video["attention.relu3_1.f.weight"], s["video_relu3_1_attention"]["f.weight"])
    assert "latest_net_adaattn_3.pth" in meta_i["sources"]
    assert "/" not in meta_i["sources"]  # only file names are recorded, never local paths


def test_single_files_and_half_storage(tmp_path):
    states = synthetic.write_adain(tmp_path / "in")
    written, _ = convert([tmp_path / "in" / "decoder.pth", tmp_path / "in" / "vgg_normalised.pth"], tmp_path, half=True)
    assert {w.kind for w in written} == {"vgg-encoder", "lite"}
    _, lite, _ = read_weights(tmp_path / "adain_decoder.safetensors")
    assert lite["decoder.conv1_1.weight"].dtype == torch.float16
    torch.testing.assert_close(lite["decoder.conv1_1.weight"].float(), states["adain_decoder"]["28.weight"],
                               rtol=1e-3, atol=1e-4)  # fmt: skip


def test_recognised_by_content_not_file_name(tmp_path):
    states = synthetic.write_adain(tmp_path / "in")
    os.rename(tmp_path / "in" / "decoder.pth", tmp_path / "in" / "whatever.pt")
    written, _ = convert([tmp_path / "in" / "whatever.pt"], tmp_path / "out")
    assert [w.kind for w in written] == ["lite"]
    assert states


def no_files_written(folder):
    return not folder.exists() or not any(folder.iterdir())


def test_wrong_shape_names_file_and_key(tmp_path):
    state = synthetic.random_state("adain_decoder", torch.Generator().manual_seed(0))
    state["14.weight"] = torch.zeros(128, 256, 1, 1)
    torch.save(state, tmp_path / "decoder.pth")
    with pytest.raises(WeightsError, match=r"decoder\.pth: tensor '14\.weight' has shape \[128, 256, 1, 1\]"):
        convert([tmp_path / "decoder.pth"], tmp_path / "out")
    assert no_files_written(tmp_path / "out")


def test_missing_key_names_file_and_key(tmp_path):
    state = synthetic.random_state("transformer", torch.Generator().manual_seed(0))
    del state["merge_conv.bias"]
    torch.save(state, tmp_path / "t.pth")
    with pytest.raises(WeightsError, match=r"t\.pth: incomplete .*missing tensor 'merge_conv\.bias'"):
        convert([tmp_path / "t.pth"], tmp_path / "out")


def test_incomplete_model_is_an_error_and_writes_nothing(tmp_path):
    synthetic.write_release(tmp_path, video=False)
    os.remove(tmp_path / "checkpoints/AdaAttN/latest_net_transformer.pth")
    with pytest.raises(WeightsError, match="official-image model is incomplete: missing the AdaAttN relu4_1"):
        convert([tmp_path / "checkpoints"], tmp_path / "out")
    assert no_files_written(tmp_path / "out")  # the VGG file was valid, but nothing is written


def test_ambiguous_relu3_1_attention_is_an_error(tmp_path):
    synthetic.write_release(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    for rel in ("attn_adain_video/latest_net_transformer.pth", "checkpoints/AdaAttN/latest_net_adaattn_3.pth"):
        os.replace(tmp_path / rel, flat / rel.replace("/", "_"))
    with pytest.raises(WeightsError, match="not clear which model it belongs to"):
        convert([tmp_path / "checkpoints", tmp_path / "attn_adain_video", flat], tmp_path / "out")


def test_non_finite_weights_are_refused(tmp_path):
    state = synthetic.random_state("adain_decoder", torch.Generator().manual_seed(0))
    state["1.bias"][3] = float("nan")
    torch.save(state, tmp_path / "decoder.pth")
    with pytest.raises(WeightsError, match="'decoder.conv4_1.bias' holds NaN"):
        convert([tmp_path / "decoder.pth"], tmp_path / "out")


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"0.weight": torch.zeros(1), "evil": Payload(str(marker))}, tmp_path / "evil.pth")
    assert not marker.exists()
    with pytest.raises(WeightsError, match=r"evil\.pth: refused: it needs code to unpickle"):
        convert([tmp_path / "evil.pth"], tmp_path / "out")
    assert not marker.exists()
    assert no_files_written(tmp_path / "out")


def test_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "pwned2"
    with open(tmp_path / "legacy.pth", "wb") as f:
        pickle.dump(Payload(str(marker)), f)
    with pytest.raises(WeightsError, match="legacy.pth"):
        convert([tmp_path / "legacy.pth"], tmp_path / "out")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"])
def test_corrupt_pth_is_a_clear_error(tmp_path, content):
    (tmp_path / "bad.pth").write_bytes(content)
    with pytest.raises(WeightsError, match=r"bad\.pth: not a readable PyTorch weights file"):
        convert([tmp_path / "bad.pth"], tmp_path / "out")


def test_unknown_pth_in_a_folder_is_skipped_with_a_note(tmp_path):
    synthetic.write_adain(tmp_path)
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pth")
    written, notes = convert([tmp_path], tmp_path / "out")
    assert len(written) == 2 and any("other.pth" in n for n in notes)
    with pytest.raises(WeightsError, match="not a known AdaAttN/AdaIN weights layout"):
        convert([tmp_path / "other.pth"], tmp_path / "out2")


def test_data_parallel_prefix_is_accepted(tmp_path):
    state = synthetic.random_state("adain_decoder", torch.Generator().manual_seed(0))
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    written, _ = convert([tmp_path / "dp.pth"], tmp_path / "out")
    assert written[0].kind == "lite"


def test_source_shapes_cover_the_spec_layouts():
    assert len(source_shapes("vgg")) == 34 and source_shapes("vgg")["51.weight"] == (512, 512, 3, 3)
    assert source_shapes("relu3_1_attention")["f.weight"] == (448, 448, 1, 1)
    assert source_shapes("transformer")["attn_adain_5_1.f.weight"] == (1472, 1472, 1, 1)
    assert source_shapes("image_decoder")["decoder_layer_2.1.weight"] == (256, 512, 3, 3)
    assert source_shapes("video_decoder")["decoder.1.weight"] == (256, 256, 3, 3)
    assert len(source_shapes("image_decoder")) == 18 and len(source_shapes("transformer")) == 14
