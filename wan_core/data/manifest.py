"""MindSpeed-MM's Wan2.2 dataset format (data.txt listing data.json files) and its validation (`wan22 validate-dataset`).

data.txt: one dataset a line, `folder,data.json` (relative paths resolve against data.txt's folder).
data.json: a list of {"path", "cap", "num_frames", "fps", "resolution": {"height", "width"}}; `path` is
relative to the dataset folder, or absolute inside it, and may not leave it; `cap` is a caption or a list
of captions (one is drawn per sample, as MindSpeed-MM does). The manifest of valid entries is one JSON list in
the same format with an added "dataset" field and `path` made absolute; training reads it as
`data.manifest`. Tolerances: resolution exact, fps within 1 %, frames within 5 % or 2 frames.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

from wan_core.errors import UserError

FPS_TOLERANCE = 0.01
FRAMES_TOLERANCE, FRAMES_SLACK = 0.05, 2
MAX_THUMBNAILS = 6
POOL_MIN_ITEMS = 16  # fewer videos than this are probed in the calling process


@dataclasses.dataclass
class EntryResult:
    dataset: str
    index: int | None  # position in data.json (None: the dataset itself is bad)
    path: str | None
    reason: str | None  # None = valid
    entry: dict | None = None  # manifest entry when valid


def _read_text(path: Path, what: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8 text") from None


def read_data_txt(data_txt: str | Path) -> list[tuple[Path, Path, int]]:
    """[(dataset folder, data.json, line number)]; UserError if data.txt itself cannot be read."""
    data_txt = Path(data_txt)
    try:
        text = _read_text(data_txt, str(data_txt))
    except FileNotFoundError:
        raise UserError(f"{data_txt}: no such data.txt") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{data_txt}: cannot be read ({_reason(exc)})") from None
    base = data_txt.absolute().parent
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) > 2:
            raise UserError(f"{data_txt} line {n}: {len(parts)} comma-separated fields; a line is `folder,data.json` "
                            "and neither path may contain a comma (move the dataset to a path without one)")
        if len(parts) != 2 or not all(parts):
            rows.append((None, None, n))
            continue
        folder, data_json = (Path(p) if Path(p).is_absolute() else base / p for p in parts)
        rows.append((folder, data_json, n))
    if not rows:
        raise UserError(f"{data_txt}: no datasets listed (expected lines `folder,data.json`)")
    return rows


def _check_schema(entry) -> str | None:
    if not isinstance(entry, dict):
        return f"not an object but {type(entry).__name__}"
    for key in ("path", "cap", "num_frames", "fps", "resolution"):
        if key not in entry:
            return f"missing field '{key}'"
    if not isinstance(entry["path"], str) or not entry["path"].strip():
        return "'path' must be a non-empty string"
    cap = entry["cap"]
    if isinstance(cap, list):  # MindSpeed-MM picks one of several captions at random
        if not cap or not all(isinstance(c, str) for c in cap):
            return "'cap' must be a string or a non-empty list of strings"
        if not all(c.strip() for c in cap):
            return "empty caption in the 'cap' list"
    elif not isinstance(cap, str):
        return f"'cap' must be a string or a list of strings, got {type(cap).__name__}"
    elif not cap.strip():
        return "empty caption"
    n = entry["num_frames"]
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        return f"'num_frames' must be a positive integer, got {n!r}"
    fps = entry["fps"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        return f"'fps' must be a positive number, got {fps!r}"
    res = entry["resolution"]
    if not isinstance(res, dict) or not all(
            isinstance(res.get(k), int) and not isinstance(res.get(k), bool) and res.get(k) > 0
            for k in ("height", "width")):
        return f"'resolution' must be {{'height': int, 'width': int}} (positive), got {res!r}"
    return None


def resolve_inside(folder: Path, rel: str) -> tuple[Path | None, str | None]:
    """The file for `rel` inside `folder`, or a reason why it may not be used (escapes, absolute)."""
    if "\x00" in rel:
        return None, "path contains a NUL byte"
    p = Path(rel)
    if ".." in p.parts:
        return None, "path escapes the dataset folder ('..')"
    root = folder.resolve()
    target = (folder / p).resolve()  # an absolute path (MindSpeed-MM accepts them) stays absolute here
    if target != root and root not in target.parents:
        if p.is_absolute():
            return None, f"absolute path outside the dataset folder {folder}"
        return None, "path escapes the dataset folder (through a symlink)"
    return target, None


def probe_and_sample(path: Path) -> tuple[tuple[int, float, int, int] | None, str | None, object]:
    """(frames, fps, height, width), reason, first frame (RGB ndarray): a container/stream probe plus one
    decoded frame, never a full decode."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None, "no video stream", None
            stream = container.streams.video[0]
            # one frame is decoded: FFmpeg's decoding threads would cost more to start than they save, and would
            # take the cores the --workers processes are for
            stream.codec_context.thread_count = 1
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            frames = stream.frames
            if not frames and stream.duration and stream.time_base and fps:
                frames = round(float(stream.duration * stream.time_base) * fps)
            first = None
            for frame in container.decode(stream):
                first = frame.to_ndarray(format="rgb24")
                break
            if first is None:
                return None, "no decodable frame", None
            if not frames:  # count packets without decoding
                container.seek(0)
                frames = 1 + sum(1 for p in container.demux(stream) if p.size) - 1
            return (int(frames), fps, first.shape[0], first.shape[1]), None, first
    except av.error.FFmpegError as exc:
        return None, f"cannot decode video ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})", None
    except Exception as exc:  # never a traceback, whatever the file holds
        return None, f"cannot decode video ({type(exc).__name__})", None


def _compare(entry: dict, found: tuple[int, float, int, int]) -> str | None:
    frames, fps, h, w = found
    res = entry["resolution"]
    if (h, w) != (res["height"], res["width"]):
        return f"resolution mismatch: declared {res['height']}x{res['width']}, file is {h}x{w}"
    if abs(fps - entry["fps"]) > FPS_TOLERANCE * entry["fps"]:
        return f"fps mismatch: declared {entry['fps']}, file has {fps:.3f}"
    declared = entry["num_frames"]
    if abs(frames - declared) > max(FRAMES_SLACK, FRAMES_TOLERANCE * declared):
        return f"frame count mismatch: declared {declared}, file has {frames}"
    return None


def _probe(path: Path):
    """A pool worker's probe: the stream facts and the reason, not the frame (frames stay out of the pipe)."""
    found, reason, _ = probe_and_sample(path)
    return found, reason


def default_workers() -> int:
    """The CPUs this process may use (a pod's CPU set, not the node's count)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def validate_dataset(data_txt: str | Path, workers: int = 1) -> tuple[list[EntryResult], list]:
    """Every entry of every dataset with its verdict, plus thumbnails [(name, frame)] of a few valid ones.
    `workers` processes probe the videos (the costly part); the verdicts are the same and in the same order
    as with one, decided in entry order afterwards."""
    pending: list = []  # one per entry: a finished EntryResult, or (name, index, rel, entry, target) to probe
    for folder, data_json, line in read_data_txt(data_txt):
        if folder is None:
            pending.append(EntryResult(f"data.txt line {line}", None, None,
                                       "malformed line (expected `folder,data.json`)"))
            continue
        name = str(folder)
        if not folder.is_dir():
            pending.append(EntryResult(name, None, None, f"dataset folder {folder} does not exist"))
            continue
        try:
            entries = json.loads(_read_text(data_json, str(data_json)))
        except FileNotFoundError:
            pending.append(EntryResult(name, None, str(data_json), f"{data_json} does not exist"))
            continue
        except (OSError, ValueError) as exc:
            what = "cannot be read" if isinstance(exc, OSError) else "is not valid JSON"
            pending.append(EntryResult(name, None, str(data_json), f"{data_json} {what} ({_reason(exc)})"))
            continue
        if not isinstance(entries, list):
            pending.append(EntryResult(name, None, str(data_json),
                                       f"{data_json} must hold a JSON list of entries, not {type(entries).__name__}"))
            continue
        for i, entry in enumerate(entries):
            rel = entry.get("path") if isinstance(entry, dict) and isinstance(entry.get("path"), str) else None
            reason = _check_schema(entry)
            target = None
            if reason is None:
                target, reason = resolve_inside(folder, rel)
            if reason is None and not target.is_file():
                reason = "file does not exist" if not target.exists() else "not a regular file"
            pending.append(EntryResult(name, i, rel, reason) if reason else (name, i, rel, entry, target))
    targets = list(dict.fromkeys(p[4] for p in pending if isinstance(p, tuple)))
    probes = dict(zip(targets, _map(_probe, targets, workers)))
    results: list[EntryResult] = []
    seen: set[Path] = set()
    for item in pending:
        if isinstance(item, EntryResult):
            results.append(item)
            continue
        name, i, rel, entry, target = item
        if target in seen:
            results.append(EntryResult(name, i, rel, "duplicate of an earlier entry (same file)"))
            continue
        found, reason = probes[target]
        reason = reason or _compare(entry, found)
        if reason is not None:
            results.append(EntryResult(name, i, rel, reason))
            continue
        seen.add(target)
        clean = {"path": str(target), "cap": entry["cap"], "num_frames": entry["num_frames"], "fps": entry["fps"],
                 "resolution": {"height": entry["resolution"]["height"], "width": entry["resolution"]["width"]},
                 "dataset": name}
        results.append(EntryResult(name, i, rel, None, clean))
    thumbnails = []
    for r in [r for r in results if r.reason is None][:MAX_THUMBNAILS]:
        thumbnails.append((f"{Path(r.path).stem}-{len(thumbnails)}", probe_and_sample(Path(r.entry["path"]))[2]))
    return results, thumbnails


def _map(fn, items: list, workers: int) -> list:
    """fn over items in order, on `workers` processes when there is enough to share: this process takes every
    workers-th item itself while a pool of workers - 1 processes takes the rest."""
    if workers <= 1 or len(items) < POOL_MIN_ITEMS:  # starting processes costs more than a few probes
        return [fn(x) for x in items]
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    mine = set(range(0, len(items), workers))
    theirs = [i for i in range(len(items)) if i not in mine]
    results: list = [None] * len(items)
    # spawn: the pool's children must not inherit a parent's threads (torch, decoders) mid-state
    with ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = pool.map(fn, [items[i] for i in theirs], chunksize=max(1, min(16, len(theirs) // (8 * workers))))
        for i in sorted(mine):
            results[i] = fn(items[i])
        for i, result in zip(theirs, pending):
            results[i] = result
    return results


def manifest_hash(entries: list[dict]) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]


def write_report(report_dir: Path, data_txt: str, results: list[EntryResult], thumbnails: list,
                 overwrite: bool = False) -> Path:
    """report.md (+ thumbnails/) and report.html in `report_dir`, which appears complete or not at all."""
    from wan_core.storage import output_dir

    with output_dir(str(report_dir), "validate-dataset", overwrite) as tmp:  # a local folder or an fsspec URL
        _write_report(tmp, data_txt, results, thumbnails)
    return Path(report_dir) / "report.md" if "://" not in str(report_dir) else f"{report_dir}/report.md"


def _write_report(report_dir: Path, data_txt: str, results: list[EntryResult], thumbnails: list) -> None:
    import base64
    import html
    import io

    from PIL import Image

    valid = [r for r in results if r.reason is None]
    bad = [r for r in results if r.reason is not None]
    thumbs_md, thumbs_html = [], []
    (report_dir / "thumbnails").mkdir()
    for name, frame in thumbnails:
        im = Image.fromarray(frame)
        im.thumbnail((160, 160))
        im.save(report_dir / "thumbnails" / f"{name}.png")
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        thumbs_md.append(f"![{name}](thumbnails/{name}.png)")
        thumbs_html.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
                           f'{base64.b64encode(buf.getvalue()).decode()}"><figcaption>{html.escape(name)}'
                           '</figcaption></figure>')
    rows = [f"| {r.dataset} | {'' if r.index is None else r.index + 1} | {r.path or ''} | {r.reason} |" for r in bad]
    md = [f"# Dataset validation: {data_txt}", "", f"- entries checked: {len(results)}", f"- valid: {len(valid)}",
          f"- invalid: {len(bad)}", ""]
    if bad:
        md += ["## Invalid entries", "", "| dataset | entry | file | reason |", "|---|---|---|---|", *rows, ""]
    if thumbs_md:
        md += ["## Sample frames", "", " ".join(thumbs_md), ""]
    (report_dir / "report.md").write_text("\n".join(md))
    table = "".join(f"<tr><td>{html.escape(r.dataset)}</td><td>{'' if r.index is None else r.index + 1}</td>"
                    f"<td>{html.escape(r.path or '')}</td><td>{html.escape(r.reason)}</td></tr>" for r in bad)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Dataset validation</title><style>body{{font-family:system-ui,sans-serif}}"
            f"figure{{display:inline-block;margin:6px;text-align:center;font-size:12px}}"
            f"td,th{{padding:2px 8px;text-align:left}}</style></head><body>"
            f"<h3>Dataset validation</h3><p>{len(results)} entries: <b>{len(valid)} valid</b>, "
            f"<b>{len(bad)} invalid</b></p>"
            + (f"<table border=1 cellpadding=3><tr><th>dataset</th><th>entry</th><th>file</th><th>reason</th></tr>"
               f"{table}</table>" if bad else "") + "<div>" + " ".join(thumbs_html) + "</div></body></html>\n")
    (report_dir / "report.html").write_text(page)


def write_manifest(path: str | Path, entries: list[dict]) -> None:
    """The manifest of valid entries (what training reads with data.manifest), written atomically."""
    from wan_core.storage import Location

    Location(str(path)).write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n")


def _reason(exc: Exception) -> str:
    """An error as words: OS errors without errno codes."""
    if isinstance(exc, OSError):
        from wan_core.fsutil import os_reason

        return os_reason(exc)
    return str(exc)


def load_manifest(path: str | Path) -> list[dict]:
    """Entries of a manifest written by validate-dataset (absolute paths)."""
    from wan_core.storage import Location

    try:
        entries = json.loads(Location(str(path)).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"data.manifest {path}: cannot read ({_reason(exc)})") from None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"data.manifest {path}: expected a non-empty JSON list of entries")
    for i, e in enumerate(entries):
        reason = _check_schema(e)
        if reason is None and not os.path.isabs(e["path"]):
            reason = "path is not absolute (a manifest from validate-dataset holds absolute paths)"
        if reason:
            raise UserError(f"data.manifest {path}, entry {i}: {reason}")
    return entries
