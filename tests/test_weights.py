"""Reading safetensors weights: strict, recognised by content, clear errors."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from adaattn_model.weights import (
    WeightsError,
    describe,
    expected_shapes,
    load_encoder,
    load_model,
    read_weights,
    save_weights,
    scan_folder,
)


def test_load_strict_and_frozen(release):
    model = load_model(release["out"] / "adaattn_official.safetensors")
    assert model.family.name == "official-image"
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
    encoder = load_encoder(release["out"] / "vgg_normalised.safetensors", dtype=torch.bfloat16)
    assert next(encoder.parameters()).dtype == torch.bfloat16


def test_wrong_kind_for_the_slot(release):
    with pytest.raises(WeightsError, match="holds vgg-encoder weights, but official-image or .* are needed"):
        load_model(release["out"] / "vgg_normalised.safetensors")
    with pytest.raises(WeightsError, match="holds lite weights, but vgg-encoder weights are needed"):
        load_encoder(release["out"] / "adain_decoder.safetensors")


def test_missing_and_unexpected_tensors_are_named(tmp_path, release):
    _, tensors, _ = read_weights(release["out"] / "adain_decoder.safetensors")
    partial = dict(tensors)
    del partial["decoder.conv2_1.bias"]
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(WeightsError, match=r"partial.safetensors: incomplete lite weights: missing 1 tensor\(s\), first 'decoder.conv2_1.bias'"):
        load_model(tmp_path / "partial.safetensors")
    extra = dict(tensors, **{"decoder.extra.weight": torch.zeros(1)})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(WeightsError, match="1 unexpected tensor"):
        load_model(tmp_path / "extra.safetensors")


def test_wrong_shape_is_named(tmp_path, release):
    _, tensors, _ = read_weights(release["out"] / "adain_decoder.safetensors")
    tensors["decoder.conv1_1.weight"] = torch.zeros(3, 64, 1, 1)
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsError, match=r"'decoder.conv1_1.weight' has shape \[3, 64, 1, 1\], expected \[3, 64, 3, 3\]"):
        load_model(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("cut", [0, 7, 100, -1000])
def test_truncated_or_garbage_file(tmp_path, release, cut):
    data = (release["out"] / "adain_decoder.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[:cut] if cut else b"garbage")
    with pytest.raises(WeightsError, match="t.safetensors: not a readable safetensors file"):
        load_model(tmp_path / "t.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="nope.safetensors: no such file"):
        load_model(tmp_path / "nope.safetensors")


def test_metadata_must_agree_with_tensors(tmp_path, release):
    _, tensors, _ = read_weights(release["out"] / "adain_decoder.safetensors")
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata={"kind": "official-video"})
    with pytest.raises(WeightsError, match="metadata says 'official-video' but the tensors are 'lite'"):
        load_model(tmp_path / "m.safetensors")


def test_save_validates_and_is_atomic(tmp_path, release):
    _, tensors, _ = read_weights(release["out"] / "adain_decoder.safetensors")
    with pytest.raises(WeightsError):
        save_weights(tmp_path / "x.safetensors", tensors, "official-video")
    assert list(tmp_path.iterdir()) == []
    save_weights(tmp_path / "x.safetensors", tensors, "lite")
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def test_scan_folder_recognises_by_content(tmp_path, release):
    shutil.copy(release["out"] / "adain_decoder.safetensors", tmp_path / "renamed.safetensors")
    shutil.copy(release["out"] / "vgg_normalised.safetensors", tmp_path / "enc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    found = scan_folder(tmp_path)
    assert {k: [p.name for p in v] for k, v in found.items()} == {
        "lite": ["renamed.safetensors"],
        "vgg-encoder": ["enc.safetensors"],
    }


def test_describe(release):
    info = describe(release["out"] / "adaattn_official.safetensors")
    assert info["kind"] == "official-image" and info["tensors"] == 38
    assert info["parameters"] == sum(torch.Size(s).numel() for s in expected_shapes("official-image").values())


def test_loaded_tensors_own_their_memory(release):
    """No parameter is a view of the file's memory map: one would keep the whole map, and the pages the
    copies were read from, resident (it doubled the weights' memory)."""
    path = release["out"] / "adaattn_official.safetensors"
    model = load_model(path)
    for name, t in model.state_dict().items():
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), name
