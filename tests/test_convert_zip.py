"""Converting the authors' zip archives as downloaded: released layout in, safetensors out; unsafe archives refused."""

from __future__ import annotations

import stat
import struct
import zipfile

import pytest
import synthetic
import torch

from adaattn_model.tools import convert as convert_module
from adaattn_model.tools.cli import main
from adaattn_model.tools.convert import convert
from adaattn_model.weights import WeightsError, read_weights


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The authors' two archives, in their layouts, with random weights; plus the states written."""
    root = tmp_path_factory.mktemp("zips")
    tree = root / "tree"
    states = synthetic.write_release(tree)
    image_zip = root / "AdaAttN_model.zip"
    with zipfile.ZipFile(image_zip, "w", zipfile.ZIP_DEFLATED) as zf:
        for layout in ("relu3_1_attention", "transformer", "image_decoder"):
            zf.write(tree / synthetic.RELEASE_FILES[layout], "AdaAttN_model/" + synthetic.RELEASE_FILES[layout])
        zf.writestr("AdaAttN_model/README.txt", "the authors' notes")
        zf.writestr("__MACOSX/AdaAttN_model/checkpoints/AdaAttN/._latest_net_decoder.pth", b"\x00\x05\x16\x07")
    video_zip = root / "attn_adain_video.zip"
    with zipfile.ZipFile(video_zip, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in synthetic.VIDEO_FILES.values():
            zf.write(tree / rel, rel)
    return {"image": image_zip, "video": video_zip, "states": states}


def test_image_archive_converts_as_downloaded(released, tmp_path):
    written, notes = convert([released["image"]], tmp_path)
    assert [(w.kind, w.path.name) for w in written] == [("official-image", "adaattn_official.safetensors")]
    assert notes == [f"ignored 2 member(s) of {released['image']} that are not .pth files"]
    _, tensors, metadata = read_weights(tmp_path / "adaattn_official.safetensors")
    s = released["states"]
    assert torch.equal(tensors["attention.relu3_1.g.weight"], s["relu3_1_attention"]["g.weight"])
    assert torch.equal(tensors["attention.relu5_1.h.bias"], s["transformer"]["attn_adain_5_1.h.bias"])
    assert torch.equal(tensors["decoder.conv1_1.weight"], s["image_decoder"]["decoder_layer_2.24.weight"])
    assert sorted(metadata["sources"].split(",")) == [
        "latest_net_adaattn_3.pth", "latest_net_decoder.pth", "latest_net_transformer.pth",
    ]  # fmt: skip


def test_both_archives_in_one_command_equal_the_unzipped_folders(released, tmp_path, capsys):
    assert main(["convert", str(released["image"]), str(released["video"]), "-o", str(tmp_path / "z")]) == 0
    assert "ignored 2 member(s)" in capsys.readouterr().err
    tree = released["image"].parent / "tree"
    convert([tree / "checkpoints" / "AdaAttN", tree / "attn_adain_video"], tmp_path / "f")
    for name in ("adaattn_official.safetensors", "adaattn_official_video.safetensors"):
        kind_z, from_zip, meta_z = read_weights(tmp_path / "z" / name)
        kind_f, from_folder, meta_f = read_weights(tmp_path / "f" / name)
        assert kind_z == kind_f and from_zip.keys() == from_folder.keys()
        assert all(torch.equal(from_zip[k], from_folder[k]) for k in from_zip)
        assert meta_z["sources_sha256"] == meta_f["sources_sha256"]  # the members' bytes, as released
    assert sorted(p.name for p in (tmp_path / "z").iterdir()) == [
        "adaattn_official.safetensors", "adaattn_official_video.safetensors",
    ]  # fmt: skip


def _good_member(released) -> bytes:
    with zipfile.ZipFile(released["video"]) as zf:
        return zf.read(synthetic.VIDEO_FILES["video_decoder"])


def _symlink(zf: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("attn_adain_video/latest_net_transformer.pth")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, "../../../../etc/passwd")


def _declare_huge(path) -> None:
    """Rewrite the central directory's uncompressed sizes to about 3.75 GiB (what a zip bomb declares)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        struct.pack_into("<I", data, at + 24, 0xF0000000)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda zf, good: zf.writestr("../evil.pth", good), "'../evil.pth' points outside the archive"),
        (lambda zf, good: zf.writestr("attn_adain_video/../../evil.pth", good), "points outside the archive"),
        (lambda zf, good: zf.writestr("/tmp/evil.pth", good), "'/tmp/evil.pth' points outside the archive"),
        (lambda zf, good: zf.writestr("C:/evil.pth", good), "points outside the archive"),
        (lambda zf, good: _symlink(zf), "is a symbolic link"),
        (None, "more than 2 GiB uncompressed"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "drive", "symlink", "huge"],
)
def test_unsafe_archives_are_refused_and_nothing_is_written(released, tmp_path, make, fragment):
    good = _good_member(released)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(synthetic.VIDEO_FILES["video_decoder"], good)  # a valid member beside the bad one
        if make is not None:
            make(zf, good)
    if make is None:
        _declare_huge(bad)
    before = sorted(p for p in tmp_path.parent.rglob("*"))
    with pytest.raises(WeightsError, match=fragment) as caught:
        convert([bad, released["video"]], tmp_path / "out")
    assert str(caught.value).startswith(f"{bad}: refused: ")
    assert not (tmp_path / "out").exists()
    assert sorted(p for p in tmp_path.parent.rglob("*")) == before  # no file anywhere, no traversal


def test_too_many_members_is_refused(released, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(convert_module, "MAX_ZIP_MEMBERS", 3)
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(4):
            zf.writestr(f"notes/{i}.txt", "x")
    assert main(["convert", str(many), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {many}: refused: 4 members (at most 3)"
    assert not (tmp_path / "out").exists()


def test_archive_without_weights_or_with_code_is_an_error(tmp_path):
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    with pytest.raises(WeightsError, match="empty.zip: no .pth files in this archive"):
        convert([empty], tmp_path / "out")
    torch.save({"w": torch.zeros(1), "code": torch.nn.ReLU()}, tmp_path / "code.pth")
    with zipfile.ZipFile(tmp_path / "code.zip", "w") as zf:
        zf.write(tmp_path / "code.pth", "checkpoints/code.pth")
    with pytest.raises(WeightsError, match=r"code\.zip/checkpoints/code\.pth: refused: it needs code to unpickle"):
        convert([tmp_path / "code.zip"], tmp_path / "out")
    with pytest.raises(WeightsError, match="not a readable zip archive"):
        (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 truncated")
        convert([tmp_path / "broken.zip"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
