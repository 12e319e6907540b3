"""Video files with PyAV, a frame at a time: decode, encode, and join encoded segments with the audio.

PyAV is optional (``pip install "adaattn[video]"``); without it every entry point raises one
:class:`VideoError`. Frames travel as uint8 RGB arrays [H,W,3] with their presentation time
stamps in the input stream's time base, so the frame rate, the time base and variable frame
timing are kept. yuv420p needs even sizes: odd ones are padded by repeating the last row or
column (the output is then one pixel larger on that side).
"""

from __future__ import annotations

import heapq
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# Output containers by file suffix; all take H.264 and AAC.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
VIDEO_CODECS = ("libx264", "h264", "libopenh264", "mpeg4")  # first one this PyAV build can encode with
DEFAULT_CRF = 18

Source = str | os.PathLike | io.IOBase


class VideoError(ValueError):
    """A video that cannot be read or written, said in one line."""


def require_av():
    try:
        import av
    except ImportError:
        raise VideoError('video files need PyAV: pip install "adaattn[video]" (or pip install av)') from None
    return av


def source_name(source: Source) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<video stream>"


def _ffmpeg_message(error: Exception) -> str:
    return str(getattr(error, "strerror", None) or error).splitlines()[0]


def container_format(path: Path) -> str:
    fmt = CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise VideoError(f"{path}: output video needs one of the suffixes {', '.join(CONTAINERS)}")
    return fmt


def video_codec() -> str:
    av = require_av()
    for name in VIDEO_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except ValueError:  # not in this build (UnknownCodecError)
            pass
    raise VideoError(f"this PyAV build has none of the video encoders {', '.join(VIDEO_CODECS)}")


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frame_rate: Fraction
    time_base: Fraction
    frames: int  # from the container's header; 0 when unknown (an estimate, not a promise)
    has_audio: bool


@dataclass(frozen=True)
class Window:
    """A time window of the input in seconds (duration 0: to the end)."""

    start: float = 0.0
    duration: float = 0.0

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.duration <= 0

    def contains(self, t: float) -> bool:
        if self.whole:  # everything, also what starts before 0 (an audio encoder's priming samples)
            return True
        return t >= self.start - 1e-9 and (self.duration <= 0 or t < self.start + self.duration - 1e-9)

    def after(self, t: float) -> bool:
        return self.duration > 0 and t >= self.start + self.duration - 1e-9


def open_input(source: Source):
    """An input container, with one-line errors for missing, corrupt or truncated files."""
    av = require_av()
    name = source_name(source)
    if isinstance(source, io.IOBase):
        source.seek(0)
    elif not Path(source).is_file():
        raise VideoError(f"{name}: no such file")
    try:
        return av.open(source if isinstance(source, io.IOBase) else os.fspath(source), mode="r")
    except av.error.FFmpegError as error:
        raise VideoError(f"{name}: not a readable video ({_ffmpeg_message(error)})") from None


def _audio_stream(container):
    # Streams FFmpeg has no decoder for have no codec context; they cannot be re-encoded either.
    for stream in container.streams.audio:
        if stream.codec_context is not None:
            return stream
    return None


class VideoReader:
    """The first video stream of a file (or file object), decoded frame by frame."""

    def __init__(self, source: Source, window: Window = Window()) -> None:
        self.name = source_name(source)
        self.window = window
        self.container = open_input(source)
        try:
            if not self.container.streams.video:
                raise VideoError(f"{self.name}: no video stream in this file")
            stream = self.stream = self.container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or stream.time_base is None or not stream.width or not stream.height:
                raise VideoError(f"{self.name}: the video stream has no frame rate or size")
            frames = int(stream.frames or 0)
            if not frames and stream.duration:
                frames = round(float(stream.duration * stream.time_base * rate))
            if window.start or window.duration:
                left = max(0.0, float(frames / rate) - window.start) if frames else 0.0
                frames = round(min(left, window.duration or left) * rate)
            self.info = VideoInfo(stream.width, stream.height, Fraction(rate), Fraction(stream.time_base), frames,
                                  _audio_stream(self.container) is not None)  # fmt: skip
        except BaseException:
            self.container.close()
            raise

    def frames(self) -> Iterator[tuple[np.ndarray, int]]:
        """(RGB uint8 [H,W,3], pts) in presentation order; pts shifted by the window's start and made increasing."""
        av = require_av()
        tb = self.info.time_base
        step = max(1, round(1 / (self.info.frame_rate * tb)))  # one frame interval in time-base units
        shift = round(self.window.start / tb)
        last = None
        count = 0
        try:
            for frame in self.container.decode(self.stream):
                t = float(frame.pts * tb) if frame.pts is not None else (count * step * float(tb))
                if self.window.after(t):
                    break
                if not self.window.contains(t):
                    continue
                pts = (frame.pts if frame.pts is not None else count * step) - shift
                if last is not None and pts <= last:  # missing or backward stamps: one frame on
                    pts = last + step
                last = pts
                count += 1
                yield frame.to_ndarray(format="rgb24"), pts
        except av.error.FFmpegError as error:
            raise VideoError(
                f"{self.name}: corrupt video data after {count} frames ({_ffmpeg_message(error)})"
            ) from None
        if count == 0:
            raise VideoError(f"{self.name}: no video frames in this file")

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameFolderReader:
    """A folder of images (frames, in natural name order: ``frame_2`` before ``frame_10``) read as a video.

    Same interface as :class:`VideoReader`; frame ``i`` has pts ``i`` in the time base ``1 / fps``.
    """

    def __init__(self, folder: str | os.PathLike, frame_rate: Fraction, window: Window = Window()) -> None:
        from .images import IMAGE_SUFFIXES, check_image_file
        from .sorting import natural_key

        self.name = os.fspath(folder)
        self.window = window
        if frame_rate <= 0:
            raise VideoError(f"{self.name}: a frame folder needs a frame rate > 0")
        found = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        self.files = sorted(found, key=lambda p: natural_key(p.name))
        if not self.files:
            raise VideoError(f"{self.name}: no images in this folder")
        width, height = check_image_file(self.files[0])
        rate = Fraction(frame_rate).limit_denominator(1001000)
        self.info = VideoInfo(width, height, rate, 1 / rate, len(self.files), False)

    def frames(self) -> Iterator[tuple[np.ndarray, int]]:
        import torch

        from .images import load_image

        tb = self.info.time_base
        shift = round(self.window.start / tb)
        for i, path in enumerate(self.files):
            t = float(i * tb)
            if self.window.after(t):
                break
            if not self.window.contains(t):
                continue
            rgb = load_image(path)[0][0]
            if tuple(rgb.shape[-2:]) != (self.info.height, self.info.width):
                raise VideoError(f"{path.name} is {rgb.shape[-1]}x{rgb.shape[-2]} but {self.files[0].name} is "
                                 f"{self.info.width}x{self.info.height}: frames must match")  # fmt: skip
            yield (rgb.permute(1, 2, 0) * 255).round().to(dtype=torch.uint8).numpy(), i - shift

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameFolderReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_reader(source: Source, window: Window = Window(), frame_rate: Fraction | None = None):
    """A :class:`VideoReader`, or a :class:`FrameFolderReader` when ``source`` is a folder."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        if frame_rate is None:
            raise VideoError(f"{os.fspath(source)}: a frame folder needs a frame rate (--fps)")
        return FrameFolderReader(source, frame_rate, window)
    return VideoReader(source, window)


def even(n: int) -> int:
    return n + (n % 2)


def pad_even(rgb: np.ndarray) -> np.ndarray:
    """[H,W,3] padded to even sides by repeating the last row/column."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoEncoder:
    """One video stream written to a new MP4 file (a segment): frames with their pts in ``time_base``.

    The segment's time stamps start at 0 (``offset``, the first frame's pts, is subtracted): an MP4
    file stores a later start as an edit list in milliseconds, which would round the time stamps.
    """

    def __init__(self, path: Path, width: int, height: int, frame_rate: Fraction, time_base: Fraction,
                 codec: str | None = None, crf: int = DEFAULT_CRF) -> None:  # fmt: skip
        av = require_av()
        self.container = av.open(os.fspath(path), mode="w", format="mp4")
        try:
            self.codec = codec or video_codec()
            stream = self.stream = self.container.add_stream(self.codec, rate=frame_rate)
            stream.width, stream.height, stream.pix_fmt = even(width), even(height), "yuv420p"
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
            if self.codec == "libx264":
                stream.options = {"crf": str(crf)}
            elif self.codec == "mpeg4":
                stream.codec_context.qscale = 2  # near-transparent; mpeg4 has no crf
        except BaseException:
            self.container.close()
            raise
        self.time_base = time_base
        self.offset: int | None = None

    def write(self, frames: np.ndarray, pts: Sequence[int]) -> None:
        """Encode RGB uint8 frames [N,H,W,3] with their time stamps."""
        av = require_av()
        for rgb, p in zip(frames, pts):
            if self.offset is None:
                self.offset = int(p)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pad_even(rgb)), format="rgb24")
            frame.pts, frame.time_base = int(p) - self.offset, self.time_base
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()

    def abort(self) -> None:
        """Close without caring whether the file is valid (it is about to be deleted)."""
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the error that made us abort is the one to report
            pass


# --- joining segments and audio into the output ---------------------------------------------------


def _segment_packets(segments: Sequence[tuple[Path, Fraction]], extradata: bytes | None, out_stream):
    for path, start in segments:
        with require_av().open(os.fspath(path), mode="r") as container:
            stream = container.streams.video[0]
            if stream.codec_context.extradata != extradata:
                raise VideoError(f"{path.name}: encoded with other codec parameters; cannot join without re-encoding")
            shift = start / stream.time_base
            if shift.denominator != 1:
                raise VideoError(f"{path.name}: its start time is not a whole number of time-base units")
            for packet in container.demux(stream):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.pts += int(shift)
                packet.dts += int(shift)
                packet.stream = out_stream
                yield float(packet.dts * packet.time_base), packet


def _copied_audio(source: Source, window: Window, out_stream):
    with open_input(source) as container:
        stream = _audio_stream(container)
        shift = round(window.start / stream.time_base)
        for packet in container.demux(stream):
            if packet.dts is None or packet.pts is None:
                continue
            t = float(packet.pts * packet.time_base)
            if window.after(t):
                break
            if not window.contains(t):
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = out_stream
            yield float(packet.dts * packet.time_base), packet


def _encoded_audio(source: Source, window: Window, out_stream):
    av = require_av()
    with open_input(source) as container:
        stream = _audio_stream(container)
        resampler = av.AudioResampler(format="fltp", layout=out_stream.layout, rate=out_stream.rate)
        samples = 0
        start = round(window.start * out_stream.rate)

        def encode(frames):
            nonlocal samples
            for frame in frames:
                frame.pts, frame.time_base = samples, Fraction(1, out_stream.rate)
                samples += frame.samples
                for packet in out_stream.encode(frame):
                    yield float(packet.pts * packet.time_base), packet

        try:
            for frame in container.decode(stream):
                t = float(frame.pts * frame.time_base) if frame.pts is not None else start / out_stream.rate
                if window.after(t):
                    break
                if window.contains(t):
                    yield from encode(resampler.resample(frame))
        except av.error.FFmpegError:
            pass  # keep the audio decoded so far: a damaged audio track does not lose the video
        yield from encode(resampler.resample(None))
        for packet in out_stream.encode(None):
            yield float(packet.pts * packet.time_base), packet


class _CannotCopy(Exception):
    pass


def join_segments(segments: Sequence[tuple[Path, Fraction]], output: Path, fmt: str, audio: Source | None = None,
                  window: Window = Window(), frame_rate: Fraction | None = None) -> str:  # fmt: skip
    """Write the video packets of ``segments`` (files with their start times in seconds, in order) and the
    audio of ``audio`` into ``output``.

    The video is remuxed, not re-encoded. The audio stream is copied when the container takes
    its codec, else re-encoded to AAC. Returns what happened to the audio ("copied",
    "re-encoded" or "none").
    """
    av = require_av()
    if not segments:
        raise VideoError("no video segments to join")
    has_audio = False
    if audio is not None:
        with open_input(audio) as probe:
            has_audio = _audio_stream(probe) is not None
    modes = ("copy", "encode") if has_audio else ("none",)
    for mode in modes:
        options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        output.unlink(missing_ok=True)
        container = av.open(os.fspath(output), mode="w", format=fmt, options=options)
        try:
            with av.open(os.fspath(segments[0][0]), mode="r") as first:
                template = first.streams.video[0]
                out_video = container.add_stream_from_template(template)
                if frame_rate:  # Matroska writes it as the default frame duration
                    out_video.codec_context.framerate = frame_rate
                extradata = template.codec_context.extradata
            streams = [_segment_packets(segments, extradata, out_video)]
            if mode != "none":
                with open_input(audio) as probe:
                    source_audio = _audio_stream(probe)
                    if mode == "copy":
                        if source_audio.codec_context.codec.canonical_name not in container.supported_codecs:
                            raise _CannotCopy
                        out_audio = container.add_stream_from_template(source_audio)
                    else:
                        layout = source_audio.layout.name if source_audio.layout.nb_channels <= 8 else "stereo"
                        out_audio = container.add_stream("aac", rate=source_audio.rate or 48000, layout=layout)
                container.start_encoding()  # fails here when the container cannot take a copied stream
                streams.append((_copied_audio if mode == "copy" else _encoded_audio)(audio, window, out_audio))
            else:
                container.start_encoding()
        except (av.error.FFmpegError, _CannotCopy):
            container.close()
            output.unlink(missing_ok=True)
            if mode == "copy":
                continue  # re-encode instead
            raise VideoError(f"{output.name}: cannot write this video ({fmt})") from None
        except BaseException:
            container.close()
            raise
        try:
            for _, packet in heapq.merge(*streams, key=lambda item: item[0]):
                container.mux(packet)
        except av.error.FFmpegError as error:
            raise VideoError(f"{output.name}: joining the segments failed ({_ffmpeg_message(error)})") from None
        finally:
            container.close()
        return {"copy": "copied", "encode": "re-encoded", "none": "none"}[mode]
    raise AssertionError("unreachable")
