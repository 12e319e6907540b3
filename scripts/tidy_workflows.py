"""Turn frontend-exported canvas workflows into the shipped ``workflows/*.json`` and thumbnails.

The canvas (UI-format) files are made from the API-format twins in ``workflows/api/`` by
ComfyUI's own frontend (``app.loadApiJson``, e.g. the test harness's ``--export-ui``), so
links and widget order are exactly the frontend's. This script then lays the nodes out in
columns by graph depth, adds a note that explains the workflow, and makes each ``.jpg``
thumbnail from that workflow's real output:

    python scripts/tidy_workflows.py EXPORTED_DIR [OUTPUTS_DIR]

EXPORTED_DIR holds ``<name>.json`` files from the frontend; OUTPUTS_DIR holds
``<name>/`` folders with the images or video each workflow produced. Without OUTPUTS_DIR
the thumbnails are left as they are (for a change of node interface that keeps the outputs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FETCH = "`python -m adaattn_model fetch`"
WEIGHTS = (
    f"Weights in `models/adaattn`: run {FETCH} for the lite model, or convert the authors' "
    "release with `python -m adaattn_model convert`."
)
NOTES = {
    "adaattn_basic": "## AdaAttN: basic stylisation\nContent + style into **AdaAttN Stylize**, then save. "
    "Strength, colour preservation and the style's scale are widgets on the node.",
    "adaattn_per_layer": "## AdaAttN: the per-layer graph\n**Encode Content** and **Encode Style** (their "
    "sockets only fit the matching inputs), apply **AdaAttN Attention** layer by layer, then **Decode**. "
    "Here relu4_1 takes style A, then a second pass blends in 40% of style B. With the authors' image model, chain relu3_1, relu4_1 and relu5_1 "
    "(each with its own style or strength).",
    "adaattn_blend": "## AdaAttN: blending styles\n**Blend Styles** mixes up to four styles by weight "
    "(mix), or lets each area pick the style that fits it (match).",
    "adaattn_regional": "## AdaAttN: regional styles\nA mask per style over the content: the left half "
    "takes one painting, the right half the other. Any MASK works (painted, from an alpha channel, from "
    "a segmentation node).",
    "adaattn_strength_color": "## AdaAttN: strength and colours\nTop: strength 0.6 with the style "
    "recoloured to the content first (match). Bottom: full strength, then **Color Transfer** keeps the "
    "content's colours (luminance).",
    "adaattn_frames_folder": "## AdaAttN: an image sequence\n**Load Frames** reads a folder of frames "
    "from ComfyUI's input directory, **Stylize Frames** stylises them in order, Save Image writes them. The "
    "batch queue client (`python -m adaattn_batch`) uses this workflow for frame folders.",
    "adaattn_video": "## AdaAttN: video frames\nLoad Video, split into frames, **Stylize Frames** "
    "(style encoded once, frames in chunks, temporal smoothing against flicker), then Create Video and Save "
    "Video. **Metrics** measures stability and style; the warping errors need OpenCV in ComfyUI's Python "
    "(`pip install opencv-python-headless`), the other numbers do not.",
    "adaattn_video_stream": "## AdaAttN: a video, streamed\n**Stylize Video** takes Load Video's VIDEO and "
    "returns a VIDEO: frames are decoded, stylised in chunks (temporal smoothing and scene cuts carried from "
    "chunk to chunk) and encoded as they go, so memory stays flat however long the video is; the audio and the "
    "frame rate are kept, and Cancel leaves no file. Save Video writes it.",
}
COLUMN_WIDTH, GAP = 400, 50


PREVIEWING = ("LoadImage", "LoadVideo")  # nodes that show their file under the widgets


def node_height(node: dict) -> float:
    if node["type"] in PREVIEWING:
        return 340.0
    return float(node.get("size", [0, 100])[1])


def layout(workflow: dict) -> None:
    """Columns by longest path from the sources; nodes stacked in id order within a column."""
    incoming: dict[int, list[int]] = {}
    for link in workflow["links"]:
        _, origin, _, target, _, _ = link
        incoming.setdefault(target, []).append(origin)
    depth: dict[int, int] = {}

    def depth_of(node_id: int) -> int:
        if node_id not in depth:
            depth[node_id] = 1 + max((depth_of(o) for o in incoming.get(node_id, [])), default=-1)
        return depth[node_id]

    columns: dict[int, list[dict]] = {}
    for node in sorted(workflow["nodes"], key=lambda n: n["id"]):
        columns.setdefault(depth_of(node["id"]), []).append(node)
    top = 290.0  # room for the note
    for column, nodes in columns.items():
        y = top
        for node in nodes:
            node["pos"] = [60.0 + column * COLUMN_WIDTH, y]
            if node["type"] in PREVIEWING:
                node["size"] = [320.0, 340.0]
            y += node_height(node) + GAP


def add_note(workflow: dict, name: str) -> None:
    note_id = workflow["last_node_id"] + 1
    workflow["last_node_id"] = note_id
    workflow["nodes"].append({
        "id": note_id, "type": "MarkdownNote", "pos": [60.0, 20.0], "size": [760.0, 200.0], "flags": {},
        "order": len(workflow["nodes"]), "mode": 0, "inputs": [], "outputs": [], "properties": {},
        "widgets_values": [f"{NOTES[name]}\n\n{WEIGHTS}"], "color": "#432", "bgcolor": "#653",
    })  # fmt: skip


def thumbnail(name: str, outputs: Path, target: Path) -> None:
    """A 512-px-wide JPEG of what the workflow produced (several outputs side by side)."""
    folder = outputs / name
    images = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))[:3]]
    if not images:  # a video: its middle frame
        images = video_frames(next(folder.glob("*.mp4")))[1:2]
    height = 256
    scaled = [im.resize((round(im.width * height / im.height), height), Image.LANCZOS) for im in images]
    sheet = Image.new("RGB", (sum(im.width for im in scaled), height))
    x = 0
    for im in scaled:
        sheet.paste(im, (x, 0))
        x += im.width
    if sheet.width > 512:
        sheet = sheet.resize((512, round(sheet.height * 512 / sheet.width)), Image.LANCZOS)
    sheet.save(target, quality=88)


def video_frames(path: Path, count: int = 3) -> list[Image.Image]:
    """First, middle and last frame of a video (PyAV, as ComfyUI ships it)."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_image() for f in container.decode(video=0)]
    picks = [round(i * (len(frames) - 1) / (count - 1)) for i in range(count)]
    return [frames[i] for i in picks]


def main(exported: Path, outputs: Path | None) -> None:
    for source in sorted(exported.glob("*.json")):
        name = source.stem
        workflow = json.loads(source.read_text())
        for node in workflow["nodes"]:
            node.pop("widgets_values_named", None)
        layout(workflow)
        add_note(workflow, name)
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(workflow, indent=2) + "\n")
        if outputs is None:
            print(f"workflows/{name}.json")
            continue
        thumbnail(name, outputs, ROOT / "workflows" / f"{name}.jpg")
        print(f"workflows/{name}.json + .jpg")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else None)
