"""Every folder of images is read in natural order: frame_2 before frame_10, everywhere."""

from PIL import Image

from adaattn_batch.jobs import expand_images as batch_images
from adaattn_batch.jobs import natural_key as batch_key
from adaattn_model.sorting import natural_key
from adaattn_model.tools.evaluate import images_in
from adaattn_model.tools.stylize import expand_images

NAMES = ["frame_10.png", "frame_2.png", "frame_1.png", "Frame_3.png", "frame_002.png"]
NATURAL = ["frame_1.png", "frame_002.png", "frame_2.png", "Frame_3.png", "frame_10.png"]


def test_folders_list_in_natural_order(tmp_path):
    for name in NAMES:
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    assert [p.name for p in expand_images([str(tmp_path)], "content")] == NATURAL  # stylize
    assert [p.name for p in images_in(tmp_path)] == NATURAL  # eval
    assert [p.name for p in batch_images([tmp_path], "frames")] == NATURAL  # the batch client


def test_the_batch_client_sorts_as_the_engine_does():
    names = [*NAMES, "a9b10", "a10b9", "a9b9", "x", "X1", ""]
    assert sorted(names, key=batch_key) == sorted(names, key=natural_key)
