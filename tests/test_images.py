"""Image files in every common mode become RGB in [0,1]; outputs are written atomically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adaattn_model.images import ImageError, load_image, resize_max_side, save_image


def gradient(w=20, h=10):
    x = np.linspace(0, 255, w, dtype=np.float64)
    return np.tile(x, (h, 1)).round().astype(np.uint8)


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK", "1", "P"])
def test_modes_without_alpha(tmp_path, mode):
    Image.fromarray(gradient()).convert(mode).save(tmp_path / "a.tif" if mode == "CMYK" else tmp_path / "a.png")
    path = tmp_path / ("a.tif" if mode == "CMYK" else "a.png")
    rgb, alpha = load_image(path)
    assert rgb.shape == (1, 3, 10, 20) and rgb.dtype == torch.float32 and alpha is None
    assert 0 <= rgb.min() and rgb.max() <= 1


def test_grayscale_becomes_equal_channels(tmp_path):
    Image.fromarray(gradient()).save(tmp_path / "g.png")
    rgb, _ = load_image(tmp_path / "g.png")
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])
    assert rgb[0, 0, 0, -1].item() == 1.0 and rgb[0, 0, 0, 0].item() == 0.0


def test_sixteen_bit_grayscale_keeps_its_range(tmp_path):
    values = np.linspace(0, 65535, 32).astype(np.uint16).reshape(4, 8)
    Image.fromarray(values).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    rgb, _ = load_image(tmp_path / "d.png")
    torch.testing.assert_close(rgb[0, 0], torch.from_numpy(values / 65535.0).float())


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_returned_separately(tmp_path, mode):
    arr = np.zeros((6, 6, 4), np.uint8)
    arr[..., 0] = 200
    arr[..., 3] = 128
    Image.fromarray(arr, "RGBA").convert(mode).save(tmp_path / "t.png")
    rgb, alpha = load_image(tmp_path / "t.png")
    assert rgb.shape == (1, 3, 6, 6) and alpha.shape == (1, 6, 6)
    assert alpha.max().item() == pytest.approx(128 / 255)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.info["transparency"] = 1
    img.putpixel((0, 0), 1)
    img.save(tmp_path / "p.png", transparency=1)
    rgb, alpha = load_image(tmp_path / "p.png")
    assert alpha is not None and alpha[0, 0, 0] == 0 and alpha[0, 1, 1] == 1


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(gradient(20, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    img.save(tmp_path / "r.jpg", exif=exif)
    rgb, _ = load_image(tmp_path / "r.jpg")
    assert rgb.shape[-2:] == (20, 10)


@pytest.mark.parametrize("content, message", [(b"", "not an image file"), (b"hello", "not an image file")])
def test_not_an_image(tmp_path, content, message):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(ImageError, match=f"x.png: {message}"):
        load_image(tmp_path / "x.png")


def test_truncated_image(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "f.png")
    data = (tmp_path / "f.png").read_bytes()
    (tmp_path / "f.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="f.png: unreadable image"):
        load_image(tmp_path / "f.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="nope.png: no such file"):
        load_image(tmp_path / "nope.png")


def test_save_rounds_and_keeps_alpha(tmp_path):
    img = torch.tensor([0.0, 0.5, 1.2]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    alpha = torch.full((1, 2, 2), 0.25)
    save_image(img, tmp_path / "o.png", alpha)
    out = np.asarray(Image.open(tmp_path / "o.png"))
    assert out.shape == (2, 2, 4) and out[0, 0].tolist() == [0, 128, 255, 64]
    save_image(img, tmp_path / "o.jpg", alpha)
    assert Image.open(tmp_path / "o.jpg").mode == "RGB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jpg", "o.png"]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError):
        save_image(torch.zeros(1, 3, 4, 4), tmp_path / "o.png")
    assert list(tmp_path.iterdir()) == []


def test_resize_max_side():
    x = torch.rand(1, 3, 300, 150)
    assert resize_max_side(x, 100).shape == (1, 3, 100, 50)
    assert resize_max_side(x, 0) is x and resize_max_side(x, 400) is x
