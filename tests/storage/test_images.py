"""storage/images.py: choosing, loading, resizing, encoding and decoding frames, and a property test
(hypothesis): any damage to a frame file gives ImageError, never another exception or a warning."""

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cpfd.storage.errors import CpfdError
from cpfd.storage.images import (
    MAX_FRAME_PIXELS, ImageError, check_image, decode_frames, load_frames, load_image, select_frames,
)

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


@pytest.mark.parametrize(
    "n, f, expected",
    [(10, 4, [0, 3, 6, 9]), (6, 4, [0, 2, 3, 5]), (4, 4, [0, 1, 2, 3]), (2, 4, [0, 1, 1, 1]),
     (1, 3, [0, 0, 0]), (7, 1, [0]), (5, 2, [0, 4])],
)
def test_select_frames(n, f, expected):
    assert select_frames(n, f) == expected


def test_select_frames_refuses_no_frames():
    with pytest.raises(ValueError):
        select_frames(0, 4)


def test_load_and_decode_frames(tmp_path):
    a = tmp_path / "a.jpg"
    Image.new("RGB", (33, 21), COLORS[1]).save(a, format="JPEG")
    gray = tmp_path / "b.png"
    Image.new("L", (5, 9), 200).save(gray, format="PNG")  # not RGB: converted
    frames = load_frames([a, gray], frames_per_video=3, image_size=12)
    pixels = decode_frames(frames)
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 12, 12, 3)
    assert (pixels[2] == 200).all() and frames[1] == frames[2]
    assert decode_frames([]).shape[0] == 0
    with pytest.raises(CpfdError, match="is not a readable image"):
        load_frames([tmp_path / "a.jpg", _junk(tmp_path)], frames_per_video=2, image_size=8)


def _junk(d: Path) -> Path:
    p = d / "junk.jpg"
    p.write_bytes(b"\xff\xd8 truncated")
    return p


# --------------------------------------------------------------------------------------------
# Properties (hypothesis): any damage to a frame file gives ImageError (the line's error), never
# another exception or a warning. Bounded example counts, no deadline; database=None: every run
# draws fresh examples.
# --------------------------------------------------------------------------------------------

FEW_EXAMPLES = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _seed_images() -> dict[str, bytes]:
    seeds = {}
    for fmt, mode in [("PNG", "RGB"), ("PNG", "P"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB")]:
        buf = io.BytesIO()
        img = Image.new(mode, (17, 9), 3 if mode == "P" else (10, 20, 30))
        if fmt == "JPEG":
            exif = Image.Exif()
            exif[0x0112] = 6  # orientation: rotate, so exif_transpose runs
            img.save(buf, format=fmt, exif=exif)
        else:
            img.save(buf, format=fmt)
        seeds[f"{fmt}-{mode}"] = buf.getvalue()
    return seeds


SEED_IMAGES = _seed_images()


@FEW_EXAMPLES
@given(seed=st.sampled_from(sorted(SEED_IMAGES)), data=st.data())
def test_damaged_frame_files_give_image_errors_only(tmp_path_factory, seed, data):
    image = bytearray(SEED_IMAGES[seed])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(image) - 1))
        image[at:at + data.draw(st.integers(0, 3))] = data.draw(st.binary(max_size=3))
    if data.draw(st.booleans()):
        image = image[: data.draw(st.integers(0, len(image)))]
    path = tmp_path_factory.mktemp("frames") / "f.img"
    path.write_bytes(bytes(image))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            width, height = check_image(path)
            assert width * height <= MAX_FRAME_PIXELS
            assert load_image(path, 8).size == (8, 8)
        except ImageError as e:
            assert str(e).startswith(f"frame file {str(path)!r} ") and "\n" not in str(e)
    assert [str(w.message) for w in caught] == []
