"""storage/video.py: sampling, orientation, pixels and every refusal, on tiny videos made here.

Each video is written with PyAV from numpy frames (32x24 px, a dozen frames). Frame k is a flat
colour whose red channel is RED0 + RED_STEP * k, so the index of each sampled frame can be read
back from the JPEG's mean colour (codec and JPEG error is a few levels; the steps are 20 apart).
"""

from __future__ import annotations

import io
import math
from bisect import bisect_right
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.stream import Disposition
import pytest
from PIL import Image

from cpfd.storage.errors import CpfdError
from cpfd.storage.video import (
    MAX_VIDEO_SIDE,
    VideoError,
    display_transpose,
    load_video_frames,
    probe_video,
    rotation_degrees,
)

RED0, RED_STEP = 10, 20
W, H = 32, 24
CAN_WRITE_ROTATION = hasattr(av.video.stream.VideoStream, "set_display_rotation")  # PyAV >= 17.1

# (container suffix, encoder): the codecs a PyAV wheel bundles.
FORMATS = [(".mp4", "libx264"), (".webm", "libvpx-vp9"), (".avi", "mpeg4")]


def flat(k: int, w: int = W, h: int = H) -> np.ndarray:
    a = np.empty((h, w, 3), np.uint8)
    a[:] = (RED0 + RED_STEP * k, 230 - RED_STEP * k, 128)
    return a


def write_video(path, frames, codec="libx264", rate=12, pts_ms=None, rotation=None, fmt=None, options=None):
    """Encode numpy RGB frames (H, W, 3); `pts_ms` gives each frame's time in milliseconds (VFR),
    `rotation` = (degrees counter-clockwise, hflip) the display matrix to store."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if pts_ms is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation[0], hflip=rotation[1])
        for k, a in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(a, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[k], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return Path(path)


def pixels(jpeg: bytes) -> np.ndarray:
    assert jpeg[:2] == b"\xff\xd8"  # a JPEG
    with Image.open(io.BytesIO(jpeg)) as img:
        assert img.format == "JPEG"
        return np.asarray(img.convert("RGB"), dtype=np.float64)  # (S, S, 3)


def frame_indices(frames: list[bytes], size: int) -> list[int]:
    """The index k of each flat frame, read from its red channel."""
    out = []
    for jpeg in frames:
        a = pixels(jpeg)
        assert a.shape == (size, size, 3)
        red = a[..., 0].mean()
        k = round((red - RED0) / RED_STEP)
        assert abs(red - (RED0 + RED_STEP * k)) < 8, f"red {red:.1f} is no frame's colour"
        assert a[..., 0].std() < 4  # flat: one frame, not a blend of two
        out.append(k)
    return out


def tsn(n_frames: int, n: int) -> list[int]:
    """Constant frame rate: the frame on screen at the centre of each of n equal segments."""
    return [(2 * k + 1) * n_frames // (2 * n) for k in range(n)]


def on_screen(path: Path, n: int) -> list[int]:
    """The rule straight from the file's packets: t_k = start + (k + 0.5) * duration / n, and the
    last frame (in presentation order) whose pts <= t_k. The last frame lasts its packet's
    duration, or until the stream's stated duration when the packet has none (PyAV 14)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        packets = [(p.pts, p.duration) for p in c.demux(stream) if p.size]
        stated = stream.duration
    pts = sorted(p for p, _ in packets)
    last, last_duration = max(packets)
    start = pts[0]
    end = last + last_duration if last_duration else start + stated
    return [bisect_right(pts, start + Fraction((2 * k + 1) * (end - start), 2 * n)) - 1 for k in range(n)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """The valid videos, made once: 12 flat frames in each format."""
    d = tmp_path_factory.mktemp("videos")
    twelve = [flat(k) for k in range(12)]
    return {suffix: write_video(d / f"twelve{suffix}", twelve, codec) for suffix, codec in FORMATS}


def refused(path, *reason_words) -> VideoError:
    """Both entry points refuse `path` with a VideoError that names it."""
    for call in (lambda: probe_video(path), lambda: load_video_frames(path, 4, 16)):
        with pytest.raises(VideoError) as info:
            call()
        err = info.value
        assert isinstance(err, CpfdError)
        assert str(err).startswith(f"video file {str(path)!r} ")
        assert err.path == Path(path) and err.reason and "\n" not in str(err)
        for word in reason_words:
            assert word in err.reason
    return err


# --- sampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [s for s, _ in FORMATS])
@pytest.mark.parametrize("n", [4, 5, 12])
def test_frames_at_segment_centres(videos, suffix, n):
    frames = load_video_frames(videos[suffix], frames_per_video=n, image_size=16)
    assert len(frames) == n
    assert frame_indices(frames, 16) == tsn(12, n)  # n=4: 1 4 7 10; n=5: 1 3 6 8 10


def test_same_file_same_bytes(videos):
    for suffix, _ in FORMATS:
        assert load_video_frames(videos[suffix], 5, 16) == load_video_frames(videos[suffix], 5, 16)


@pytest.mark.parametrize("suffix,codec", [(".webm", "libvpx-vp9"), (".mp4", "libx264")])
def test_variable_frame_rate_follows_presentation_time(tmp_path, suffix, codec):
    pts_ms = [0, 100, 150, 600, 700, 1000, 1020, 1040]  # bunched frames, then long gaps
    path = write_video(tmp_path / f"vfr{suffix}", [flat(k) for k in range(8)], codec, pts_ms=pts_ms)
    expected = on_screen(path, 6)
    assert expected != tsn(8, 6)  # sampling by index would pick other frames
    assert frame_indices(load_video_frames(path, 6, 16), 16) == expected


def test_frames_an_edit_list_hides_are_not_the_video(tmp_path):
    """A lossless cut keeps the frames before the cut for decoding and hides them with an MP4 edit
    list (here: the muxer does it for frames at negative times); only the shown frames count."""
    path = tmp_path / "cut.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = 24  # one keyframe, before the cut
        for k in range(-4, 8):
            frame = av.VideoFrame.from_ndarray(flat(k + 4), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 12)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    assert frame_indices(load_video_frames(path, 4, 16), 16) == [4 + k for k in tsn(8, 4)]
    assert probe_video(path)["frames"] == 8


def test_one_frame_video_gives_n_copies(tmp_path):
    path = write_video(tmp_path / "one.mp4", [flat(3)])
    frames = load_video_frames(path, 5, 16)
    assert len(frames) == 5 and len(set(frames)) == 1
    assert frame_indices(frames, 16) == [3] * 5
    assert probe_video(path)["frames"] == 1


def test_fewer_frames_than_wanted_repeat_by_time(tmp_path):
    path = write_video(tmp_path / "three.webm", [flat(k) for k in range(3)], "libvpx-vp9")
    assert frame_indices(load_video_frames(path, 8, 16), 16) == [0, 0, 0, 1, 1, 2, 2, 2]


# --- pixels -----------------------------------------------------------------------------------


def test_shorter_side_resized_then_centre_crop(tmp_path):
    bands = np.empty((24, 48, 3), np.uint8)  # red | green (the centred 24x24 square) | blue
    bands[:, :12], bands[:, 12:36], bands[:, 36:] = (220, 30, 30), (30, 220, 30), (30, 30, 220)
    path = write_video(tmp_path / "wide.mp4", [bands] * 3)
    for size in (8, 16, 48):  # down, and up
        a = pixels(load_video_frames(path, 2, size)[0])
        assert a.shape == (size, size, 3)
        inner = a[1:-1, 1:-1]  # the outermost pixels may blend with the cropped bands
        assert np.all(np.abs(inner.mean(axis=(0, 1)) - (30, 220, 30)) < 12)


# --- orientation ------------------------------------------------------------------------------


def quadrants(w: int, h: int) -> np.ndarray:
    """An upright test picture: red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.empty((h, w, 3), np.uint8)
    a[: h // 2, : w // 2], a[: h // 2, w // 2 :] = (230, 20, 20), (20, 230, 20)
    a[h // 2 :, : w // 2], a[h // 2 :, w // 2 :] = (20, 20, 230), (230, 230, 230)
    return a


# How each display matrix is stored: `stored` is the upright picture as the file keeps it, for a
# player that applies the matrix to show it upright (what ffmpeg's autorotate does).
ORIENTATIONS = {
    # rotation -90, a phone held upright: the scene's top is stored on the left; turn clockwise.
    (-90, False): lambda up: np.rot90(up, 1),
    (90, False): lambda up: np.rot90(up, -1),  # top stored on the right; turn counter-clockwise
    (180, False): lambda up: np.rot90(up, 2),
    (0, True): lambda up: up[:, ::-1],  # mirrored
    (90, True): lambda up: np.rot90(up[::-1, :], 1),  # ffmpeg: transpose=clock_flip, its inverse
}


@pytest.mark.skipif(not CAN_WRITE_ROTATION, reason="PyAV < 17.1 cannot write a display matrix")
@pytest.mark.parametrize("rotation", list(ORIENTATIONS))
def test_rotated_video_comes_out_upright(tmp_path, rotation):
    upright = quadrants(24, 32)  # a portrait picture
    stored = np.ascontiguousarray(ORIENTATIONS[rotation](upright))
    path = write_video(tmp_path / "turned.mp4", [stored] * 3, rotation=rotation)
    a = pixels(load_video_frames(path, 1, 16)[0])
    for rows, cols, colour in [
        (slice(1, 6), slice(1, 6), (230, 20, 20)),
        (slice(1, 6), slice(10, 15), (20, 230, 20)),
        (slice(10, 15), slice(1, 6), (20, 20, 230)),
        (slice(10, 15), slice(10, 15), (230, 230, 230)),
    ]:
        assert np.all(np.abs(a[rows, cols].mean(axis=(0, 1)) - colour) < 25), (rotation, rows, cols)
    info = probe_video(path)
    assert (info["width"], info["height"]) == stored.shape[1::-1]  # as stored, like ffprobe
    expected_angle = {(-90, False): -90, (90, False): 90, (180, False): -180, (0, True): -180, (90, True): 90}
    assert info["rotation"] == expected_angle[rotation]


def display_matrix(degrees: float, hflip: bool = False, vflip: bool = False) -> list[int]:
    """libavutil's av_display_rotation_set then av_display_matrix_flip, in Python."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    m = [round(c * 65536), round(-s * 65536), 0, round(s * 65536), round(c * 65536), 0, 0, 0, 1 << 30]
    flip = (-1 if hflip else 1, -1 if vflip else 1, 1)
    return [v * flip[i % 3] for i, v in enumerate(m)]


def test_display_matrix_to_upright_transform():
    T = Image.Transpose
    cases = {
        (0, False, False): None,
        (90, False, False): T.ROTATE_90,
        (-90, False, False): T.ROTATE_270,
        (270, False, False): T.ROTATE_270,
        (180, False, False): T.ROTATE_180,
        (0, True, False): T.FLIP_LEFT_RIGHT,
        (0, False, True): T.FLIP_TOP_BOTTOM,
        (90, True, False): T.TRANSVERSE,
        (-90, True, False): T.TRANSPOSE,
        (80, False, False): T.ROTATE_90,  # not a quarter turn: the nearest one
        (-100, False, False): T.ROTATE_270,
    }
    for (deg, hflip, vflip), op in cases.items():
        assert display_transpose(display_matrix(deg, hflip, vflip)) == op, (deg, hflip, vflip)
    assert display_transpose(None) is None
    assert rotation_degrees(display_matrix(90)) == 90 and rotation_degrees(display_matrix(-90)) == -90
    assert rotation_degrees(display_matrix(0)) == 0 and abs(rotation_degrees(display_matrix(180))) == 180
    assert rotation_degrees([0] * 9) == 0


def quadrant_colours(a: np.ndarray) -> np.ndarray:
    """Mean colour of the middle of each quadrant of an (H, W, 3) picture: (4, 3)."""
    h, w = a.shape[:2]
    middles = [(h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4), (3 * h // 4, 3 * w // 4)]
    return np.array([a[y - 2 : y + 2, x - 2 : x + 2].mean(axis=(0, 1)) for y, x in middles])


def test_display_transform_on_decoded_frames(tmp_path):
    """The transform on real decoded frames, matrix by matrix; runs on any PyAV, also one that
    cannot write a display matrix."""
    upright = quadrants(24, 32)
    for i, ((deg, hflip), store) in enumerate(ORIENTATIONS.items()):
        path = write_video(tmp_path / f"stored{i}.mp4", [np.ascontiguousarray(store(upright))])
        with av.open(str(path)) as c:
            stored = next(c.decode(video=0)).to_image()
        shown = stored.transpose(display_transpose(display_matrix(deg, hflip)))
        assert shown.size == (24, 32)
        difference = quadrant_colours(np.asarray(shown, dtype=np.float64)) - quadrant_colours(upright)
        assert np.all(np.abs(difference) < 25), (deg, hflip)


# --- probe ------------------------------------------------------------------------------------


def test_probe_reports_what_the_file_holds(videos):
    for suffix, codec in [(".mp4", "h264"), (".webm", "vp9"), (".avi", "mpeg4")]:
        info = probe_video(videos[suffix])
        assert info == {
            "duration": pytest.approx(1.0, abs=0.002),
            "frames": 12,
            "width": W,
            "height": H,
            "rotation": 0,
            "codec": codec,
        }


def test_odd_names_and_non_utf8_tags_are_read(videos, tmp_path):
    colon = tmp_path / "we:ird" / "clip:1.mp4"  # not a protocol
    colon.parent.mkdir()
    colon.write_bytes(videos[".mp4"].read_bytes())
    assert frame_indices(load_video_frames(colon, 4, 16), 16) == tsn(12, 4)

    tagged = tmp_path / "tagged.mp4"
    with av.open(str(tagged), "w") as out:
        out.metadata["title"] = "QQQQZZZZ"
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for k in range(3):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(flat(k), format="rgb24")))
        out.mux(stream.encode())
    data = tagged.read_bytes()
    tagged.write_bytes(data.replace(b"QQQQZZZZ", b"\xe9t\xe9 \xff\xfe!!"))  # a Latin-1 title, not UTF-8
    assert frame_indices(load_video_frames(tagged, 3, 16), 16) == [0, 1, 2]


# --- refusals ---------------------------------------------------------------------------------


def test_missing_path_and_directory(tmp_path):
    refused(tmp_path / "nope.mp4", "does not exist")
    refused(tmp_path, "directory")


def test_files_that_are_not_videos(tmp_path):
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    refused(noise, "not a video FFmpeg can read")
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    refused(empty, "not a video FFmpeg can read")
    notes = "Notes for the shoot.\nBring the second camera, and spare batteries.\n" * 40
    for name in ("notes.txt", "notes.mp4"):  # as .txt, FFmpeg would show it as ANSI art
        (tmp_path / name).write_text(notes)
        refused(tmp_path / name, "not a video")
    picture = tmp_path / "still.jpg"
    Image.fromarray(flat(0)).save(picture)
    refused(picture, "not a video", "image")


@pytest.mark.parametrize(
    "name,codec,rate,samples", [("voice.m4a", "aac", 8000, 1024), ("voice.webm", "libopus", 48000, 960)]
)
def test_audio_only_file(tmp_path, name, codec, rate, samples):
    path = tmp_path / name
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        for _ in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.int16), format="s16", layout="mono")
            frame.sample_rate = rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    refused(path, "no video stream", "audio")


def test_audio_with_cover_art(tmp_path):
    """An audio file whose cover is a one-picture video stream: still no video."""
    path = tmp_path / "song.mp4"
    with av.open(str(path), "w") as out:
        audio = out.add_stream("aac", rate=8000)
        audio.layout = "mono"
        cover = out.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = W, H, "yuvj420p"
        try:
            cover.disposition = Disposition.attached_pic
        except (AttributeError, TypeError):
            pytest.skip("this PyAV cannot mark a stream as cover art")
        picture = av.VideoFrame.from_ndarray(flat(0), format="rgb24").reformat(format="yuvj420p")
        out.mux(cover.encode(picture))
        out.mux(cover.encode())
        for _ in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
            frame.sample_rate = 8000
            out.mux(audio.encode(frame))
        out.mux(audio.encode())
    refused(path, "no video stream", "cover art")


@pytest.mark.parametrize("suffix,codec,options", [
    (".mp4", "libx264", None),  # index at the end: nothing to open
    (".mp4", "libx264", {"movflags": "+faststart"}),  # index first: it promises 4 s
    (".webm", "libvpx-vp9", None),  # header promises 4 s, clusters stop early
    (".avi", "mpeg4", None),
])
def test_truncated_file(tmp_path, suffix, codec, options):
    frames = [flat(k % 12) for k in range(48)]  # 4 s
    whole = write_video(tmp_path / f"whole{suffix}", frames, codec, options=options)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    refused(cut)
    if suffix == ".webm" or options:  # FFmpeg opens these: the duration cross-check refuses them
        refused(cut, "truncated")


def test_damaged_stream_is_refused_whole(videos, tmp_path):
    data = bytearray(videos[".mp4"].read_bytes())
    box = data.index(b"mdat")  # the frames; damage there, not in the index (moov)
    mid = box + int.from_bytes(data[box - 4 : box], "big") // 2
    data[mid : mid + 200] = np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(VideoError, match="damaged: decoding failed") as info:
        load_video_frames(path, 4, 16)
    assert str(path) in str(info.value)


def test_oversized_frames_refused_before_decoding(tmp_path):
    path = write_video(tmp_path / "wide.mp4", [np.zeros((16, MAX_VIDEO_SIDE + 8, 3), np.uint8)] * 2)
    refused(path, f"{MAX_VIDEO_SIDE + 8}x16", str(MAX_VIDEO_SIDE))


def test_frames_without_usable_timestamps(tmp_path):
    raw = write_video(tmp_path / "raw.h264", [flat(k) for k in range(3)], fmt="h264")
    refused(raw, "without presentation timestamps")

    same = tmp_path / "same.mkv"  # three frames, all at pts 0: no duration
    with av.open(str(same), "w") as out:
        stream = out.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        frames = [av.VideoFrame.from_ndarray(flat(k), format="rgb24") for k in range(3)]
        packets = [p for frame in frames for p in stream.encode(frame)]
        for p in packets + list(stream.encode()):
            p.pts = p.dts = 0
            out.mux(p)
    refused(same, "no usable duration")


def test_bad_arguments(videos):
    with pytest.raises(ValueError, match="frames_per_video"):
        load_video_frames(videos[".mp4"], 0, 16)
    with pytest.raises(ValueError, match="image_size"):
        load_video_frames(videos[".mp4"], 4, 0)
