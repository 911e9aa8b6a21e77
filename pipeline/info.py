"""`cpfd info PATH`: what a corpus, teacher dump or model folder holds."""

from __future__ import annotations

from pathlib import Path

from storage.corpus import CORPUS_JSON, Corpus
from storage.errors import CpfdError


def describe(path: str | Path) -> dict:
    """A JSON-able description of the folder, by the manifest file it holds."""
    path = Path(path)
    if not path.exists():
        raise CpfdError(f"{path}: no such file or directory")
    if (path / CORPUS_JSON).exists():
        return Corpus(path).summary()
    raise CpfdError(f"{path}: not a cpfd corpus, dump or model folder (no corpus.json, _manifest.json or config.json)")


def format_description(d: dict) -> str:
    """Human-readable text for `describe`'s output."""
    if d["kind"] == "corpus":
        lines = [
            f"corpus {d['path']}  (task {d['task']}, schema v{d['schema_version']})",
            f"  classes: {', '.join(d['classes'])}",
            f"  inputs: {d['frames_per_video']} frames of {d['image_size']}px per video"
            if d["frames_per_video"] else "  inputs: no frames",
            f"  text: {'title + ocr_text' if d['has_text'] else 'none'}",
            f"  privileged features ({len(d['privileged_features'])}): {', '.join(d['privileged_features']) or '-'}",
            f"  features ({len(d['features'])}): {', '.join(d['features']) or '-'}",
        ]
        for split, s in d["splits"].items():
            counts = ", ".join(f"{c} {n}" for c, n in s["label_counts"].items())
            lines.append(f"  {split}: {s['rows']} rows in {s['shards']} shard(s), {s['row_groups']} row group(s); {counts}")
        lines.append(f"  fingerprint: {d['fingerprint']}")
        return "\n".join(lines)
    return "\n".join(f"{k}: {v}" for k, v in d.items())
