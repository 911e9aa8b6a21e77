"""Video files turned into the frames a corpus stores: probe, sample, turn upright, resize, encode.

`cpfd import` (and the serve path) can take a video file instead of a list of image files
(`storage/images.py`): `load_video_frames` gives the `frames_per_video` JPEG images of
`image_size` x `image_size` pixels a corpus stores for it, and `probe_video` checks a file and
says what it holds without decoding more than its first frame, so import can refuse bad files
before it writes anything.

    probe_video("clip.mp4")
    # {"duration": 9.97, "frames": 299, "width": 1920, "height": 1080, "rotation": -90, "codec": "h264"}
    frames = load_video_frames("clip.mp4", frames_per_video=8, image_size=224)  # 8 JPEG byte strings

Files are read with PyAV (FFmpeg). The rules, as implemented here (docs/formats.md repeats them):

Stream and clock. The video stream FFmpeg ranks best is read, cover art and thumbnails aside
(an audio file with a cover has no video); other streams are ignored. Its frames' presentation
timestamps (pts) are the clock, so a variable frame rate needs nothing special. The video's
extent is measured from the frames themselves in a first pass that reads the packets without
decoding them: start = the earliest pts, end = the latest pts plus that frame's duration,
duration = end - start. The last frame's duration comes from its packet; when the file gives
none (PyAV 14's FFmpeg reads none from a variable-rate MP4), the frame lasts until the end the
header states for the stream, else one mean frame interval. Beyond that, a header's duration
is not used for sampling, as it is what a truncated file gets wrong: it is a cross-check
instead (see Refusals).

Sampling (TSN style). N = `frames_per_video` target times at the centres of N equal segments,
t_k = start + (k + 0.5) * duration / N for k = 0..N-1, computed exactly in the stream's time
base. For each t_k the frame kept is the one on screen at t_k: the last frame whose pts <= t_k.
A video with fewer frames than N needs no special case: the rule repeats frames by itself, each
about N / F times in time order (3 frames, N = 8: 0 0 0 1 1 2 2 2; 1 frame: N copies); the
last frame is not repeated beyond that. A time before the first decoded frame (only when the
decoder drops leading frames without an error, such as the open-GOP pictures of some cameras)
takes the first decoded frame.

Orientation. A frame is turned upright with the display matrix FFmpeg attaches to it (a phone
stores portrait video as landscape and records the turn there): the eight quarter turns and
mirrors are applied exactly, as the matrix maps pixels (libavutil/display.h); any other angle
is rounded to the nearest quarter turn. `probe_video` reports the angle FFmpeg reports
(counter-clockwise degrees, -90 for a typical portrait phone video); width and height are the
stored ones, before the turn, as ffprobe shows them.

Pixels. The frame is converted to RGB by FFmpeg (with the frame's own colour matrix and range),
its centred square of side min(width, height) is resized to `image_size` x `image_size` with
Pillow's bilinear filter (the same as resizing the shorter side to `image_size`, then a centre
crop), turned upright, and encoded as baseline JPEG, quality 90, 4:2:0. Same file, same bytes:
nothing random, and FFmpeg's decoders are bit-exact whatever their thread count. Only the
chosen frames are kept, as small images; the rest are dropped as they are decoded.

Refusals. A bad file raises `VideoError` (a `CpfdError`) naming the file, `video file '<path>'
<reason>`, and nothing is returned for it, never a partial result:
- a missing path, a directory, a file FFmpeg cannot open;
- a file FFmpeg opens as something other than a video: text (FFmpeg shows a longer .txt file
  as ANSI art, 'tty') or a still image (a JPEG would open as a one-frame video);
- no video stream (an audio-only file, with or without cover art), no video packets, no
  decodable frame;
- frames wider or taller than MAX_VIDEO_SIDE (8192) pixels, refused from the header before
  anything is decoded (FFmpeg's `max_pixels` also stops the decoder for sizes the header hides);
- frames without presentation timestamps (a raw stream with no container), no time base, or
  a duration that is not > 0 for more than one frame (all frames on one timestamp);
- damage: the whole video stream must decode. A decoding error anywhere, before or after the
  frames that would be kept, refuses the file: frames decoded before the damage are not used, so
  a damaged file never yields frames sampled from part of it. So does a stream whose decoded
  frames stop before its last packet.
- truncation: when the header states the video stream's duration (the stream's own duration,
  Matroska's per-track DURATION tag, or the file's duration when the video is its only stream),
  frames that end more than max(2 frame intervals, 1% of it) before it mean a cut file, refused
  (a lone frame without a duration cannot be checked). Header durations that are missing, zero
  or negative are ignored; the measured one above is what sampling uses.
Damage that a decoder conceals without an error (MPEG-4 part 2 hides corrupt blocks) cannot be
seen here.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
from av.sidedata.sidedata import Type as SideDataType
from av.stream import Disposition
from PIL import Image

from cpfd.storage.errors import CpfdError

MAX_VIDEO_SIDE = 8192  # pixels, each side: 8K video is 7680 x 4320; larger is a broken or hostile file
JPEG_QUALITY = 90

# What PyAV raises while opening, demuxing or decoding: FFmpeg's errors (av.error.InvalidDataError
# and the rest, some of which are also OSError or ValueError) and Python's own I/O errors.
_AV_ERRORS = (av.error.FFmpegError, OSError)

# Demuxers FFmpeg picks for files that are not videos: text shown as ANSI art ('tty' takes a
# longer .txt file; 'bin', 'xbin', 'adf', 'idf' are its kin) and still images ('image2' and the
# '*_pipe' image demuxers).
_NOT_VIDEO_FORMATS = {"tty", "bin", "xbin", "adf", "idf", "image2"}

# Video streams that are pictures, not motion: cover art and thumbnails.
_PICTURES = Disposition.attached_pic | Disposition.timed_thumbnails

# Matroska states a track's duration only in a tag, e.g. "00:01:02.500000000".
_DURATION_TAG = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")

# The upper-left 2x2 of a display matrix (a, b, c, d), each rounded to -1, 0 or 1, for the eight
# quarter turns and mirrors, and the Pillow operation that shows such a frame upright. FFmpeg maps
# a stored pixel (x, y) to (a x + c y, b x + d y) on screen (libavutil/display.h), y pointing down.
_UPRIGHT = {
    (1, 0, 0, 1): None,
    (0, -1, 1, 0): Image.Transpose.ROTATE_90,  # rotation +90: a quarter turn counter-clockwise
    (-1, 0, 0, -1): Image.Transpose.ROTATE_180,
    (0, 1, -1, 0): Image.Transpose.ROTATE_270,  # rotation -90, a portrait phone video: clockwise
    (-1, 0, 0, 1): Image.Transpose.FLIP_LEFT_RIGHT,
    (1, 0, 0, -1): Image.Transpose.FLIP_TOP_BOTTOM,
    (0, 1, 1, 0): Image.Transpose.TRANSPOSE,  # (x, y) -> (y, x)
    (0, -1, -1, 0): Image.Transpose.TRANSVERSE,  # (x, y) -> (-y, -x)
}
# Counter-clockwise quarter turns 0..3 -> the Pillow operation, for matrices not in _UPRIGHT.
_QUARTER_TURNS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


class VideoError(CpfdError):
    """A video file that is missing, not a video, or does not decode; `path` and `reason` let a
    caller name the file its own way (e.g. as the manifest wrote it)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"video file {str(path)!r} {reason}")
        self.path, self.reason = Path(path), reason


@dataclass(frozen=True)
class _Timeline:
    """The video stream's extent, measured from its packets, in ticks of `time_base` seconds."""

    time_base: Fraction
    start: int  # pts of the earliest frame
    end: Fraction  # when the last frame stops being shown
    last_pts: int  # pts of the latest frame: decoding must reach it
    frames: int

    def seconds(self, ticks: int | Fraction) -> float:
        return float(ticks * self.time_base)


def rotation_degrees(matrix: Sequence[int]) -> int:
    """The angle of a display matrix in whole degrees, counter-clockwise, in [-180, 180]: what
    FFmpeg's av_display_rotation_get (and PyAV's `VideoFrame.rotation`) report."""
    scale_x, scale_y = math.hypot(matrix[0], matrix[3]), math.hypot(matrix[1], matrix[4])
    if scale_x == 0 or scale_y == 0:
        return 0  # a degenerate matrix: FFmpeg says NaN, players ignore it
    return round(-math.degrees(math.atan2(matrix[1] / scale_y, matrix[0] / scale_x)))


def display_transpose(matrix: Sequence[int] | None) -> Image.Transpose | None:
    """The Pillow operation that shows a frame with this display matrix (9 ints, 16.16 fixed
    point, as FFmpeg stores it) upright; None for no matrix or the identity.

    A quarter turn or mirror is applied exactly; any other angle is rounded to a quarter turn.
    `VideoFrame.rotation` alone is not enough: a mirrored frame reports -180 or 0.
    """
    if matrix is None:
        return None
    key = tuple(round(matrix[i] / 65536) for i in (0, 1, 3, 4))
    if key in _UPRIGHT:
        return _UPRIGHT[key]
    return _QUARTER_TURNS[round(rotation_degrees(matrix) / 90) % 4]


def probe_video(path: str | Path) -> dict:
    """What a video file holds, checked: duration (seconds, measured from its frames), frames
    (count), width and height (as stored, before rotation), rotation (counter-clockwise degrees,
    as FFmpeg reports it) and codec (FFmpeg's decoder name).

    Reads every packet but decodes only the first frame: it refuses everything the module
    docstring lists except damage past the first frame, which `load_video_frames` finds.
    Raises VideoError naming the file.
    """
    path = Path(path)
    with _open_video(path) as (container, stream):
        timeline = _scan(container, stream, path)
        codec = stream.codec_context.name
        width, height = stream.codec_context.width, stream.codec_context.height
    with _open_video(path) as (container, stream):
        try:
            first = next(iter(container.decode(stream)), None)
        except _AV_ERRORS as e:
            raise VideoError(path, f"has no decodable video frame ({_why(e)})") from None
        if first is None:
            raise VideoError(path, "has no decodable video frame")
        matrix = _display_matrix(first)
    return {
        "duration": timeline.seconds(timeline.end - timeline.start),
        "frames": timeline.frames,
        "width": width or first.width,
        "height": height or first.height,
        "rotation": 0 if matrix is None else rotation_degrees(matrix),
        "codec": codec,
    }


def load_video_frames(path: str | Path, frames_per_video: int, image_size: int) -> list[bytes]:
    """The frames a corpus stores for one video file: `frames_per_video` JPEG byte strings of
    `image_size` x `image_size` RGB pixels, in time order, sampled as the module docstring says.

    Reads the file twice (packets, then a full decode). Raises VideoError naming the file.
    """
    if frames_per_video < 1:
        raise ValueError(f"expected frames_per_video >= 1, got {frames_per_video}")
    if image_size < 1:
        raise ValueError(f"expected image_size >= 1, got {image_size}")
    path = Path(path)
    with _open_video(path) as (container, stream):
        timeline = _scan(container, stream, path)
    with _open_video(path) as (container, stream):
        images = _sample(container, stream, timeline, frames_per_video, image_size, path)
    encoded: dict[int, bytes] = {}  # a repeated frame is one image, encoded once
    for img in images:
        if id(img) not in encoded:
            encoded[id(img)] = encode_jpeg(img)
    return [encoded[id(img)] for img in images]


def encode_jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling="4:2:0")
    return buf.getvalue()


def _why(e: BaseException) -> str:
    """A PyAV error as one short line: FFmpeg's message without the errno and call."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.splitlines()[0]


def _av_open(url: str):
    try:
        # PyAV <= 18 decodes tags as strict UTF-8 by default, so one Latin-1 title would refuse
        # the whole file; the tags are not used here.
        return av.open(url, metadata_errors="replace")
    except TypeError:  # PyAV >= 19 dropped the argument: it reads tags byte-exact
        return av.open(url)


@contextmanager
def _open_video(path: Path) -> Iterator[tuple]:
    """The open container and its best video stream, checked for what a header can show; the
    container is closed on leaving."""
    if path.is_dir():
        raise VideoError(path, "is a directory, not a video")
    if not path.exists():
        raise VideoError(path, "does not exist")
    try:
        # "file:" so that a name with a colon ("clip:1.mp4") is never read as a protocol.
        container = _av_open("file:" + os.fspath(path))
    except _AV_ERRORS as e:
        raise VideoError(path, f"is not a video FFmpeg can read ({_why(e)})") from None
    with container:
        names = set(container.format.name.split(","))
        if names & _NOT_VIDEO_FORMATS or any(n.endswith("_pipe") for n in names):
            name = container.format.name
            raise VideoError(path, f"is not a video (FFmpeg reads it as {name!r}: text or an image)")
        stream = _motion_stream(container)
        if stream is None:
            kinds = sorted({_kind(s) for s in container.streams}) or ["none"]
            raise VideoError(path, f"has no video stream (streams: {', '.join(kinds)})")
        _check_size(stream.codec_context.width, stream.codec_context.height, path)
        # For sizes only the bitstream shows: the decoder itself refuses to allocate more.
        stream.codec_context.options = {"max_pixels": str(MAX_VIDEO_SIDE * MAX_VIDEO_SIDE)}
        yield container, stream


def _motion_stream(container):
    """The video stream FFmpeg ranks best among those that are not pictures: cover art (an
    attached picture, which `streams.best` would pick in an audio file) and thumbnails."""
    videos = [s for s in container.streams.video if not s.disposition & _PICTURES]
    if not videos:
        return None
    best = container.streams.best("video")
    return best if best in videos else videos[0]


def _kind(stream) -> str:
    return "cover art" if stream.type == "video" and stream.disposition & _PICTURES else str(stream.type)


def _check_size(width: int, height: int, path: Path) -> None:
    if width > MAX_VIDEO_SIDE or height > MAX_VIDEO_SIDE:
        raise VideoError(path, f"has {width}x{height} frames; the limit is {MAX_VIDEO_SIDE} pixels a side")


def _header_duration(container, stream) -> Fraction | None:
    """The video stream's duration in seconds as the header states it, or None."""
    time_base = _fraction(stream.time_base)
    if stream.duration is not None and stream.duration > 0 and time_base:
        return stream.duration * time_base
    for key, value in stream.metadata.items():
        if key.upper() == "DURATION" or key.upper().startswith("DURATION-"):
            match = _DURATION_TAG.match(str(value).strip())
            if match:
                h, m, s = match.groups()
                seconds = int(h) * 3600 + int(m) * 60 + Fraction(s)
                return seconds if seconds > 0 else None
    if len(container.streams) == 1 and container.duration is not None and container.duration > 0:
        return Fraction(container.duration, av.time_base)  # the file's duration: here, the video's
    return None


def _fraction(value) -> Fraction | None:
    """A PyAV rational (Fraction up to 18, av.AVRational from 19) as a Fraction; None if unset."""
    if not value:
        return None
    return Fraction(int(value.numerator), int(value.denominator))


def _scan(container, stream, path: Path) -> _Timeline:
    """First pass: the stream's packets, not decoded, give its extent; checked against the header."""
    time_base = _fraction(stream.time_base)
    if time_base is None:
        raise VideoError(path, "has no time base for its video stream")
    count, first, last, last_duration = 0, None, None, 0  # last_duration: 0 when the file gives none
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue  # the empty packet that ends demuxing; frames an edit list hides
            if packet.pts is None:
                raise VideoError(
                    path, "has video frames without presentation timestamps (a raw stream with no container?)"
                )
            count += 1
            first = packet.pts if first is None else min(first, packet.pts)
            if last is None or packet.pts >= last:
                last, last_duration = packet.pts, packet.duration or 0
    except _AV_ERRORS as e:
        at = f" after {float(last * time_base):.3f} s" if last is not None else ""
        raise VideoError(path, f"is damaged: reading it failed{at} ({_why(e)})") from None
    if count == 0:
        raise VideoError(path, "has no video frames")
    if count > 1 and last == first:
        raise VideoError(path, f"has no usable duration: its {count} frames all have one timestamp")
    # The mean frame interval; unknown for a lone frame without a duration.
    interval = Fraction(last - first, count - 1) if count > 1 else Fraction(last_duration) or None
    known_end = last + max(last_duration, 0)  # the packets' own word on where the frames end

    declared = _header_duration(container, stream)  # seconds
    declared_end = None if declared is None else first + declared / time_base  # ticks
    if declared_end is not None and interval is not None:
        if known_end < declared_end - max(2 * interval, (declared_end - first) / 100):
            raise VideoError(
                path,
                f"is truncated or damaged: its video frames end at "
                f"{float((known_end - first) * time_base):.3f} s but its header says {float(declared):.3f} s",
            )
    if last_duration > 0:
        end = Fraction(last + last_duration)
    elif declared_end is not None and declared_end > last:
        end = declared_end  # the last frame lasts until the header's end (within the check above)
    else:
        end = last + (interval or 0)
    return _Timeline(time_base, first, end, last, count)


def _display_matrix(frame) -> tuple[int, ...] | None:
    """The frame's display matrix (9 ints), which FFmpeg 7+ copies onto every decoded frame."""
    data = frame.side_data.get(SideDataType.DISPLAYMATRIX)
    if data is None:
        return None
    raw = bytes(data)
    return struct.unpack("=9i", raw[:36]) if len(raw) >= 36 else None


def _square(frame, image_size: int) -> Image.Image:
    """A decoded frame as an upright RGB `image_size` x `image_size` Pillow image."""
    img = frame.to_image()  # RGB, the frame's own size
    w, h = img.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
    # Turning the small square is the same as turning the frame first: the crop is centred.
    op = display_transpose(_display_matrix(frame))
    return img if op is None else img.transpose(op)


def _sample(
    container, stream, timeline: _Timeline, n: int, image_size: int, path: Path
) -> list[Image.Image]:
    """Second pass: decode the whole stream, keep the frame on screen at each target time."""
    span = timeline.end - timeline.start
    targets = [timeline.start + (2 * k + 1) * span / (2 * n) for k in range(n)]
    chosen: list[Image.Image] = []
    shown, shown_img = None, None  # the latest decoded frame, and its image once one is needed
    try:
        for frame in container.decode(stream):
            _check_size(frame.width, frame.height, path)
            if frame.pts is None:
                raise VideoError(path, "has a decoded frame without a presentation timestamp")
            # Targets before this frame's pts are past: the frame on screen then was `shown`.
            while shown is not None and len(chosen) < n and targets[len(chosen)] < frame.pts:
                if shown_img is None:
                    shown_img = _square(shown, image_size)
                chosen.append(shown_img)
            shown, shown_img = frame, None
    except _AV_ERRORS as e:
        at = f" after {timeline.seconds(shown.pts):.3f} s" if shown is not None else ""
        raise VideoError(path, f"is damaged: decoding failed{at} ({_why(e)})") from None
    if shown is None:
        raise VideoError(path, "has no decodable video frame")
    if shown.pts < timeline.last_pts:
        raise VideoError(
            path,
            f"is truncated or damaged: decoding stops at {timeline.seconds(shown.pts):.3f} s, "
            f"before its last frame at {timeline.seconds(timeline.last_pts):.3f} s",
        )
    if len(chosen) < n:
        last_img = shown_img if shown_img is not None else _square(shown, image_size)
        chosen.extend([last_img] * (n - len(chosen)))
    return chosen
