"""`cpfd import` and `cpfd predict` with video files in the manifest: sampling, bad files
(`--on-bad`), and `--workers` writing the same corpus as one process.

Every video is made here with PyAV from numpy frames: 24x16 px, 12 frames at 12 fps. Frame k is
a flat colour whose red channel is RED0 + RED_STEP * k, so the index of each stored frame can be
read back from the JPEG's mean colour (codec and JPEG error is a few levels; steps are 20 apart).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from cpfd.storage.corpus import CORPUS_JSON, Corpus
from cpfd.storage.errors import CpfdError
from cpfd.storage.manifest import SKIPPED_JSONL, parse_line
from cpfd.storage.video import load_video_frames
from tests.factories import tiny_corpus
from tests.invoke import FAST, ok, one_error_line, refused, run

RED0, RED_STEP = 10, 20
W, H, N = 24, 16, 12
SIZE, FPV = 8, 4
TSN_12_4 = [1, 4, 7, 10]  # the frames on screen at the centres of 4 equal segments of 12 frames


def flat(k: int) -> np.ndarray:
    a = np.empty((H, W, 3), np.uint8)
    a[:] = (RED0 + RED_STEP * k, 230 - RED_STEP * k, 128)
    return a


def write_video(path: Path, frames, codec: str = "libx264", options=None) -> Path:
    with av.open(str(path), "w", options=options or {}) as out:
        stream = out.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for a in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        out.mux(stream.encode())
    return path


def frame_indices(frames: list[bytes]) -> list[int]:
    """The index k of each stored frame (a SIZE x SIZE JPEG), read from its red channel."""
    out = []
    for data in frames:
        assert data[:2] == b"\xff\xd8"  # JPEG
        with Image.open(io.BytesIO(data)) as img:
            a = np.asarray(img.convert("RGB"), dtype=np.float64)
        assert a.shape == (SIZE, SIZE, 3)
        k = round((a[..., 0].mean() - RED0) / RED_STEP)
        assert abs(a[..., 0].mean() - (RED0 + RED_STEP * k)) < 8
        out.append(k)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Good and bad files, made once."""
    d = tmp_path_factory.mktemp("clips")
    twelve = [flat(k) for k in range(N)]
    clips = {
        "mp4": write_video(d / "twelve.mp4", twelve),
        "webm": write_video(d / "twelve.webm", twelve, "libvpx-vp9"),
        "one": write_video(d / "one.mp4", [flat(5)]),
    }
    # Cut in half, its index first: the header promises 4 s, the frames stop at 2 (found in pass 1).
    whole = write_video(d / "long.mp4", [flat(k % N) for k in range(48)], options={"movflags": "+faststart"})
    clips["truncated"] = d / "truncated.mp4"
    clips["truncated"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    # Text: not a video (pass 1).
    clips["text"] = d / "notes.mp4"
    clips["text"].write_text("Notes for the shoot.\nBring the second camera.\n" * 40)
    # Random bytes in the middle of the frames' data: the header and the first frame are fine, so
    # only decoding (pass 2) finds it. Noise frames, so that the middle is past the first frame.
    rng = np.random.default_rng(0)
    noise = write_video(d / "noise.mp4", [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(N)])
    data = bytearray(noise.read_bytes())
    box = data.index(b"mdat")
    mid = box + int.from_bytes(data[box - 4: box], "big") // 2
    data[mid: mid + 200] = np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes()
    clips["damaged"] = d / "damaged.mp4"
    clips["damaged"].write_bytes(bytes(data))
    return clips


def write_manifest(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def line(i: int, video) -> dict:
    return {"id": f"v{i}", "video": str(video), "title": f"clip {i}", "label": ("ok", "bad")[i % 2]}


def import_(manifest, out, *args):
    return run("import", manifest, out, "--quiet", "--frames-per-video", FPV, "--image-size", SIZE, *args)


def rows_of(corpus_dir: Path) -> dict[str, dict]:
    corpus = Corpus(corpus_dir)
    return {r["sample_id"]: r for split in ("train", "eval")
            for t in corpus.iter_batches(split, ["sample_id", "label", "frames"]) for r in t.to_pylist()}


def test_video_lines_import_the_frames_at_segment_centres(tmp_path, clips):
    folder = tmp_path / "data"
    (folder / "clips").mkdir(parents=True)
    for name in ("mp4", "webm"):
        shutil.copy(clips[name], folder / "clips" / clips[name].name)
    manifest = write_manifest(folder / "videos.jsonl", [
        line(1, "clips/twelve.mp4"),  # relative to the manifest's folder
        line(2, "clips/twelve.webm"),
        line(3, clips["one"]),  # absolute; one frame: repeated
    ])
    out = tmp_path / "corpus"
    result = import_(manifest, out)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("read 3 lines, wrote 3 rows (train ")
    assert "skipped" not in result.stdout and not (out / SKIPPED_JSONL).exists()
    corpus = Corpus(out)
    assert (corpus.frames_per_video, corpus.image_size, corpus.has_text) == (FPV, SIZE, True)
    rows = rows_of(out)
    assert frame_indices(rows["v1"]["frames"]) == TSN_12_4  # H.264 in MP4
    assert frame_indices(rows["v2"]["frames"]) == TSN_12_4  # VP9 in WebM
    assert frame_indices(rows["v3"]["frames"]) == [5] * FPV
    assert rows["v1"]["frames"] == load_video_frames(clips["mp4"], FPV, SIZE)  # storage/video.py's bytes


def test_a_line_gives_frames_or_a_video_not_both(tmp_path, clips):
    manifest = write_manifest(tmp_path / "m.jsonl", [{**line(1, clips["mp4"]), "frames": ["a.png"]}])
    refused("import", manifest, tmp_path / "out", "--quiet", message=f"{manifest}:1: has both frames and video")
    assert not (tmp_path / "out").exists()
    for value, problem in (("", "video must be the path of one video file"), (["a.mp4"], "got a list of 1 item"),
                           (None, "got null"), ("a\0b.mp4", "holds a NUL character"),
                           ("\ud83d.mp4", "not valid Unicode"), ("x" * 5000, "4,096")):
        with pytest.raises(CpfdError, match=problem) as info:
            parse_line(json.dumps({"id": "v1", "video": value, "label": 0}), 7, "m.jsonl")
        assert str(info.value).startswith("m.jsonl:7: ") and "\n" not in str(info.value)


def test_video_lines_and_frame_lines_do_not_mix(tmp_path, clips):
    Image.fromarray(flat(0)).save(tmp_path / "f.png")
    lines = [line(1, clips["mp4"]), {"id": "v2", "frames": ["f.png"], "title": "t", "label": "ok"}]
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    refused("import", manifest, tmp_path / "out", "--quiet",
            message=f"{manifest}:2: gives its frames as image files (frames) but line 1 as a video file (video); "
                    "every line gives its frames the same way")
    manifest = write_manifest(tmp_path / "m.jsonl", lines[::-1])
    refused("import", manifest, tmp_path / "out", "--quiet", message=f"{manifest}:2: gives its frames as a video file (video)")
    # A line without frames at all is the kinds rule, as before.
    manifest = write_manifest(tmp_path / "m.jsonl", [line(1, clips["mp4"]), {"id": "v2", "title": "t", "label": "ok"}])
    refused("import", manifest, tmp_path / "out", "--quiet", message=f"{manifest}:2: has text but line 1 has frames, text")


def test_missing_video_and_video_inside_out(tmp_path, clips):
    manifest = write_manifest(tmp_path / "m.jsonl", [line(1, clips["mp4"]), line(2, "nope.mp4")])
    refused("import", manifest, tmp_path / "out", "--quiet",
            message=f"{manifest}:2: video file 'nope.mp4' does not exist ({tmp_path / 'nope.mp4'})")
    (tmp_path / "out").mkdir()
    shutil.copy(clips["mp4"], tmp_path / "out" / "in.mp4")
    manifest = write_manifest(tmp_path / "m.jsonl", [line(1, clips["mp4"]), line(2, "out/in.mp4")])
    refused("import", manifest, tmp_path / "out", "--quiet", message=f"{manifest}:2: video file 'out/in.mp4' lies inside OUT")


@pytest.mark.parametrize("bad,line_no,reason", [
    ("truncated", 2, "is truncated or damaged: its video frames end at"),  # pass 1: probe
    ("text", 3, "is not a video"),  # pass 1: probe
    ("damaged", 4, "is damaged: decoding failed"),  # pass 2: only decoding finds it
])
def test_a_bad_video_is_one_error_naming_line_and_file(tmp_path, clips, bad, line_no, reason):
    lines = [line(1, clips["mp4"])] + [line(i, clips["webm"]) for i in range(2, 6)]
    lines[line_no - 1] = line(line_no, clips[bad])
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    result = import_(manifest, tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert one_error_line(result.stderr).startswith(f"error: {manifest}:{line_no}: video file {str(clips[bad])!r} {reason}")
    assert not (tmp_path / "out").exists()  # nothing written, not even an empty OUT


def test_skip_leaves_out_bad_videos_and_lists_them(tmp_path, clips):
    lines = [line(1, clips["mp4"]), line(2, clips["truncated"]), line(3, clips["text"]), line(4, clips["webm"]),
             line(5, clips["damaged"]), line(6, tmp_path / "gone.mp4"), line(7, clips["one"])]
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    out = tmp_path / "out"
    result = import_(manifest, out, "--on-bad", "skip")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("read 7 lines, wrote 3 rows (train ")
    assert result.stdout.strip().endswith(f") to {out}, skipped 4 (see {out / SKIPPED_JSONL})")
    report = [json.loads(x) for x in (out / SKIPPED_JSONL).read_text().splitlines()]
    assert [(e["line"], e["id"], e["file"]) for e in report] == [
        (2, "v2", str(clips["truncated"])), (3, "v3", str(clips["text"])), (5, "v5", str(clips["damaged"])),
        (6, "v6", str(tmp_path / "gone.mp4"))]
    assert report[0]["reason"].startswith("is truncated or damaged")
    assert report[1]["reason"].startswith("is not a video")
    assert report[2]["reason"].startswith("is damaged: decoding failed")  # found in pass 2
    assert report[3]["reason"].startswith("does not exist")
    rows = rows_of(out)
    assert sorted(rows) == ["v1", "v4", "v7"]
    assert frame_indices(rows["v4"]["frames"]) == TSN_12_4
    assert Corpus(out).classes == ["bad", "ok"]  # skipped lines still name classes
    assert Corpus(out).meta["created_by"].endswith("--on-bad skip")

    again = tmp_path / "again"  # same manifest, same corpus
    assert import_(manifest, again, "--on-bad", "skip").exit_code == 0
    assert (again / SKIPPED_JSONL).read_bytes() == (out / SKIPPED_JSONL).read_bytes()
    assert Corpus(again).fingerprint == Corpus(out).fingerprint


def test_skip_covers_bad_frame_images_too(tmp_path):
    for k in range(3):
        Image.fromarray(flat(k)).save(tmp_path / f"{k}.png")
    (tmp_path / "text.png").write_text("not an image")
    damaged = (tmp_path / "0.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(damaged[: len(damaged) // 2])  # header fine, data cut: pass 2
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"id": "a", "frames": ["0.png", "1.png"], "label": 0},
        {"id": "b", "frames": ["0.png", "text.png"], "label": 1},
        {"id": "c", "frames": ["cut.png"], "label": 1},
        {"id": "d", "frames": ["2.png"], "label": 0},
    ])
    refused("import", manifest, tmp_path / "e", "--quiet", message=f"{manifest}:2: frame file 'text.png' is not a readable image")
    result = ok("import", manifest, tmp_path / "out", "--quiet", "--on-bad", "skip", "--image-size", SIZE)
    assert "wrote 2 rows" in result.stdout and "skipped 2" in result.stdout
    report = [json.loads(x) for x in (tmp_path / "out" / SKIPPED_JSONL).read_text().splitlines()]
    assert [(e["line"], e["id"], e["file"]) for e in report] == [(2, "b", "text.png"), (3, "c", "cut.png")]
    assert sorted(rows_of(tmp_path / "out")) == ["a", "d"]


def test_every_line_skipped_is_an_error(tmp_path, clips):
    manifest = write_manifest(tmp_path / "m.jsonl", [line(1, clips["text"]), line(2, clips["truncated"])])
    refused("import", manifest, tmp_path / "out", "--quiet", "--on-bad", "skip",
            message=f"{manifest}: every line has a bad file (2 skipped), so nothing is left to import")
    assert not (tmp_path / "out").exists()
    manifest = write_manifest(tmp_path / "m.jsonl", [line(1, clips["damaged"]), line(2, clips["text"])])  # pass 2, 1
    refused("import", manifest, tmp_path / "out", "--quiet", "--on-bad", "skip",
            message=f"every line has a bad file (2 skipped), so nothing is left to import; the first, line 1: "
                    f"{str(clips['damaged'])!r} is damaged: decoding failed")
    assert not (tmp_path / "out").exists()


def test_workers_write_the_same_bytes_and_meet_errors_in_line_order(tmp_path, clips):
    good = [clips["mp4"], clips["webm"], clips["one"]]
    lines = [line(i, good[i % 3]) for i in range(1, 21)]
    lines[4] = line(5, clips["text"])  # pass 1 skip
    lines[12] = line(13, clips["damaged"])  # pass 2 skip
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    for workers in (1, 2):
        result = import_(manifest, tmp_path / f"w{workers}", "--on-bad", "skip", "--rows-per-shard", 5,
                         "--workers", workers)
        assert result.exit_code == 0, result.output
        assert "skipped 2" in result.stdout
    one, two = tmp_path / "w1", tmp_path / "w2"
    shards = sorted(p.relative_to(one) for p in one.rglob("*.parquet"))
    assert len(shards) >= 3 and shards == sorted(p.relative_to(two) for p in two.rglob("*.parquet"))
    for shard in shards:
        assert (one / shard).read_bytes() == (two / shard).read_bytes(), shard
    assert (one / SKIPPED_JSONL).read_bytes() == (two / SKIPPED_JSONL).read_bytes()
    meta1, meta2 = (json.loads((d / CORPUS_JSON).read_text()) for d in (one, two))
    assert meta1["fingerprint"] == meta2["fingerprint"]
    meta2["created_by"] = meta2["created_by"].replace(str(two), str(one))
    assert meta1 == meta2  # --workers is not recorded

    # With workers, the first problem in line order is still the one reported: a bad file on line
    # 5 before a duplicate id on line 9, and a duplicate id on line 3 before a bad file on line 13.
    lines[8] = line(9, good[0]) | {"id": "v1"}
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    result = import_(manifest, tmp_path / "e", "--workers", 2)
    assert one_error_line(result.stderr).startswith(f"error: {manifest}:5: video file {str(clips['text'])!r} is not a video")
    lines[4], lines[8], lines[2] = line(5, good[1]), line(9, good[0]), line(3, good[2]) | {"id": "v2"}
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    result = import_(manifest, tmp_path / "e", "--workers", 2)
    assert one_error_line(result.stderr) == f"error: {manifest}:3: duplicate id 'v2' (first on line 2)"
    assert not (tmp_path / "e").exists()


def test_predict_reads_video_lines(tmp_path, clips):
    """A student trained on 2 frames of 16 px scores a manifest of videos; the scores are those of
    the same frames given as image files (JPEG decoded at the model's size: the same pixels)."""
    corpus = tiny_corpus(tmp_path / "c", n_train=32, n_eval=8, image_size=16, frames_per_video=2)
    ok("train-student", corpus.path, "--out", tmp_path / "s", *FAST)
    videos = [clips["mp4"], clips["webm"], clips["one"]]
    as_videos, as_images = [], []
    for i, path in enumerate(videos):
        common = {"id": f"v{i}", "title": f"clip {i}", "ocr_text": "", "features": {"duration": 1.0}}
        as_videos.append({**common, "video": str(path)})
        names = []
        for k, data in enumerate(load_video_frames(path, 2, 16)):
            (tmp_path / f"{i}-{k}.jpg").write_bytes(data)
            names.append(f"{i}-{k}.jpg")
        as_images.append({**common, "frames": names})
    scores = []
    for name, lines in (("videos", as_videos), ("images", as_images)):
        result = ok("predict", tmp_path / "s", write_manifest(tmp_path / f"{name}.jsonl", lines), "--quiet")
        scores.append([json.loads(x) for x in result.stdout.splitlines()])
    assert [s["id"] for s in scores[0]] == ["v0", "v1", "v2"]
    assert scores[0] == scores[1]

    bad = write_manifest(tmp_path / "bad.jsonl", [as_videos[0], {**as_videos[1], "video": str(clips["damaged"])}])
    refused("predict", tmp_path / "s", bad, "--quiet",
            message=f"{bad}:2: video file {str(clips['damaged'])!r} is damaged: decoding failed")


def test_a_worker_that_dies_is_one_error_naming_the_lines_in_flight(tmp_path):
    import os

    from cpfd.storage.manifest import _in_order, _Pool

    pool = _Pool(1)
    try:
        jobs = [((7, "v7"), (3,)), ((8, "v8"), None)]  # os._exit(3) in the worker: as if killed
        with pytest.raises(CpfdError, match=r"^m.jsonl: a worker process died .* while lines 7 to 8 were in flight"):
            list(_in_order(pool, os._exit, jobs, Path("m.jsonl")))
    finally:
        pool.close()
