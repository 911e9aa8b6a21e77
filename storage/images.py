"""Video frames on disk and in the corpus: choose, load, resize, encode and decode them.

A corpus stores each video as `frames_per_video` encoded images of `image_size` x `image_size`
pixels (docs/formats.md, "Frames"). `cpfd import` builds them from image files with `load_frames`; the
serve path (`cpfd predict`) does the same with a manifest's frames, and the training data
pipeline turns stored frames back into pixels with `decode_frames`.

    idx = select_frames(n_available=10, frames_per_video=4)      # [0, 3, 6, 9]
    frames = load_frames(paths, frames_per_video=4, image_size=64)  # 4 PNG byte strings
    pixels = decode_frames(frames)                                  # uint8 (4, 64, 64, 3)

Images are read with Pillow: EXIF orientation applied, converted to RGB, resized (aspect ratio
not kept: the model's input is square) and re-encoded as PNG, so every stored frame has one
size, one mode and one codec whatever the source was. A source frame may have at most
MAX_FRAME_PIXELS pixels; `check_image` reads only the header to check that (pass 1 of
`cpfd import` runs it on every frame it will decode), and `load_image` checks again before
decoding. No Pillow warning reaches the user: a frame either decodes or raises ImageError.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cpfd.storage.errors import CpfdError

# What Pillow raises for files it cannot identify or decode (truncated, corrupt, not an image).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)

# The largest source frame, in pixels (width x height), checked from the header before decoding.
# 8K UHD (7680 x 4320, 33.2 Mpx) fits; one RGB decode stays under 120 MB. Pillow's own check
# (warn at 89 Mpx, refuse at 179 Mpx) never gets a say: ours is lower, and its warning is silenced.
MAX_FRAME_PIXELS = 40_000_000


class ImageError(CpfdError):
    """An image file that is missing or does not decode; `path` and `reason` let a caller
    name the file its own way (e.g. as the manifest wrote it)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"frame file {str(path)!r} {reason}")
        self.path, self.reason = Path(path), reason


def select_frames(n_available: int, frames_per_video: int) -> list[int]:
    """Indices of the frames to keep, in time order.

    More frames than needed: evenly spaced, first and last included (one frame: the first).
    Fewer: all of them, then the last one repeated up to `frames_per_video`.
    """
    if n_available < 1:
        raise ValueError(f"expected at least one frame, got {n_available}")
    if frames_per_video < 1:
        raise ValueError(f"expected frames_per_video >= 1, got {frames_per_video}")
    if n_available < frames_per_video:
        return list(range(n_available)) + [n_available - 1] * (frames_per_video - n_available)
    if frames_per_video == 1:
        return [0]
    # Integer rounding of i * (n - 1) / (F - 1): exact, and the same on every machine.
    span, steps = n_available - 1, frames_per_video - 1
    return [(i * span + steps // 2) // steps for i in range(frames_per_video)]


def _too_large(width: int, height: int) -> str:
    return f"is {width} x {height} = {width * height:,} pixels; the limit for a frame is {MAX_FRAME_PIXELS:,}"


def _read(path: Path, image_size: int | None):
    """The header's (width, height) if `image_size` is None, else the decoded RGB image.

    Every failure becomes ImageError naming the file; every warning is dropped (Pillow's
    DecompressionBombWarning, "possibly corrupt EXIF data", palette transparency: the image
    either passes the checks here or is refused)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:  # reads the header only
                width, height = img.size
                if width * height > MAX_FRAME_PIXELS:
                    raise ImageError(path, _too_large(width, height))
                if image_size is None:
                    return width, height
                # JPEG only: let the decoder downscale by 1/2..1/8 while staying >= the target size,
                # several times faster on full-size video frames than decoding every pixel.
                img.draft("RGB", (image_size, image_size))
                img.load()  # decode now
                img = ImageOps.exif_transpose(img)
                return img.convert("RGB")
    except FileNotFoundError:
        raise ImageError(path, "does not exist") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(path, "is not a readable image (not a format Pillow knows)") from None
    except Image.DecompressionBombError:
        # Over twice Pillow's limit, refused inside Image.open before we see the size.
        raise ImageError(path, f"has more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels; the limit for a frame "
                               f"is {MAX_FRAME_PIXELS:,}") from None
    except _DECODE_ERRORS as e:
        raise ImageError(path, f"is not a readable image ({e})") from None


def check_image(path: str | Path) -> tuple[int, int]:
    """Read only the header of an image file; return its (width, height).

    Raises ImageError (a CpfdError) naming the file if it is missing, not an image Pillow
    knows, or larger than MAX_FRAME_PIXELS. A file that passes may still fail to decode
    (damaged data after the header): only `load_image` finds that.
    """
    return _read(Path(path), None)


def load_image(path: str | Path, image_size: int) -> Image.Image:
    """One image file as an RGB `image_size` x `image_size` Pillow image.

    Raises ImageError (a CpfdError) naming the file if it is missing, not a decodable image,
    or larger than MAX_FRAME_PIXELS (checked from the header, before decoding).
    """
    img = _read(Path(path), image_size)
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return img


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def load_frames(paths: Sequence[str | Path], frames_per_video: int, image_size: int) -> list[bytes]:
    """The frames a corpus stores for one video: `frames_per_video` PNG byte strings.

    Only the frames `select_frames` keeps are opened (a repeated frame is decoded once), so a
    damaged file among the dropped ones goes unnoticed: the corpus never holds it.
    """
    if image_size < 1:
        raise ValueError(f"expected image_size >= 1, got {image_size}")
    encoded: dict[int, bytes] = {}
    frames = []
    for i in select_frames(len(paths), frames_per_video):
        if i not in encoded:
            encoded[i] = encode_png(load_image(paths[i], image_size))
        frames.append(encoded[i])
    return frames


def decode_frames(frames: Sequence[bytes]) -> np.ndarray:
    """Encoded frames (PNG or JPEG bytes, as stored in a corpus) -> uint8 array (F, H, W, 3)."""
    if len(frames) == 0:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    arrays = []
    for k, data in enumerate(frames):
        try:
            with Image.open(io.BytesIO(data)) as img:
                arrays.append(np.asarray(img.convert("RGB"), dtype=np.uint8))  # (H, W, 3)
        except _DECODE_ERRORS as e:
            raise CpfdError(f"frame {k} is not a readable image ({e})") from None
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise CpfdError(f"frames of one video differ in size: {sorted(shapes)}")
    return np.stack(arrays)  # (F, H, W, 3)
