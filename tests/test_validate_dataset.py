"""validate-dataset over a corpus of broken entries: the right reason for each, the good ones kept."""
import json
import os
import subprocess
import sys

import pytest

from wan_core.data.demo import render_clip
from wan_core.data.video import write_video


def good(path="videos/good.mp4", cap="A red circle moving.", frames=9, fps=16, h=32, w=32):
    return {"path": path, "cap": cap, "num_frames": frames, "fps": fps, "resolution": {"height": h, "width": w}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    ds = root / "ds"
    (ds / "videos").mkdir(parents=True)
    clip, _ = render_clip(0, 9, 32, 32)
    for name in ("good", "good2", "good3", "good4", "dup", "captions", "absolute"):
        write_video(ds / "videos" / f"{name}.mp4", clip, 16)
    (ds / "videos" / "junk.mp4").write_bytes(os.urandom(3000))
    (ds / "videos" / "empty.mp4").write_bytes(b"")
    (ds / "videos" / "text.mp4").write_text("this is not a video\n")
    (ds / "videos" / "a_dir.mp4").mkdir()
    outside = root / "outside.mp4"
    write_video(outside, clip, 16)
    os.symlink(outside, ds / "videos" / "escape.mp4")
    os.symlink(ds / "videos" / "good3.mp4", ds / "videos" / "inside_link.mp4")  # a symlink inside is fine
    import av  # an audio-only file
    with av.open(str(ds / "videos" / "audio.m4a"), "w") as c:
        s = c.add_stream("aac", rate=8000)
        import numpy as np
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    entries = [
        (good(), None),
        (good("videos/good2.mp4"), None),
        (good("videos/inside_link.mp4"), None),
        (good("videos/good.mp4"), "duplicate"),
        (good("./videos/good.mp4"), "duplicate"),
        ("just a string", "not an object"),
        ({"cap": "x", "num_frames": 9, "fps": 16, "resolution": {"height": 32, "width": 32}}, "missing field 'path'"),
        ({k: v for k, v in good().items() if k != "cap"}, "missing field 'cap'"),
        ({k: v for k, v in good().items() if k != "resolution"}, "missing field 'resolution'"),
        (good(cap=""), "empty caption"),
        (good(cap="   "), "empty caption"),
        (good(cap=42), "'cap' must be a string"),
        (good(frames="9"), "'num_frames' must be a positive integer"),
        (good(frames=-3), "'num_frames' must be a positive integer"),
        (good(fps=0), "'fps' must be a positive number"),
        ({**good(), "resolution": [32, 32]}, "'resolution' must be"),
        (good(path=""), "'path' must be a non-empty string"),
        (good(path="../outside.mp4"), "escapes the dataset folder \\('..'\\)"),
        (good(path=str(outside)), "absolute path outside the dataset folder"),
        (good(path="videos/escape.mp4"), "through a symlink"),
        (good(path="videos/missing.mp4"), "file does not exist"),
        (good(path="videos/a_dir.mp4"), "not a regular file"),
        (good(path="videos/junk.mp4"), "cannot decode video"),
        (good(path="videos/empty.mp4"), "cannot decode video"),
        (good(path="videos/text.mp4"), "cannot decode video"),
        (good(path="videos/audio.m4a"), "no video stream"),
        (good(path="videos/dup.mp4", h=64), "resolution mismatch"),
        (good(path="videos/dup.mp4", fps=24), "fps mismatch"),
        (good(path="videos/dup.mp4", frames=33), "frame count mismatch"),
        (good(path="videos/good4.mp4", frames=10), None),  # within 2 frames: accepted
        # MindSpeed-MM's other forms: several captions, an absolute path inside the dataset folder
        (good(path="videos/captions.mp4", cap=["a red circle", "a circle moving right"]), None),
        (good(path=str(ds / "videos" / "absolute.mp4")), None),
        (good(path="videos/captions.mp4", cap=["fine", ""]), "empty caption in the 'cap' list"),
        (good(path="videos/captions.mp4", cap=[]), "non-empty list of strings"),
    ]
    (ds / "data.json").write_text(json.dumps([e for e, _ in entries]))
    # whole-dataset failures
    bad_json = root / "badjson"
    bad_json.mkdir()
    (bad_json / "data.json").write_text("[{not json")
    not_list = root / "notlist"
    not_list.mkdir()
    (not_list / "data.json").write_text('{"path": "x"}')
    latin1 = root / "latin1"
    latin1.mkdir()
    (latin1 / "data.json").write_bytes('[{"cap": "caf\xe9"}]'.encode("latin-1"))
    binary = root / "binary"
    binary.mkdir()
    (binary / "data.json").write_bytes(os.urandom(200))
    lines = ["ds,ds/data.json", "badjson,badjson/data.json", "notlist,notlist/data.json", "latin1,latin1/data.json",
             "binary,binary/data.json", "nofolder,nofolder/data.json", "ds,ds/missing.json", "only-one-field"]
    (root / "data.txt").write_text("\n".join(lines) + "\n")
    dataset_reasons = ["not valid JSON", "must hold a JSON list", "not UTF-8", "not valid JSON|not UTF-8",
                       "does not exist", "does not exist", "malformed line"]
    return root, entries, dataset_reasons


def run(*args):
    return subprocess.run([sys.executable, "-m", "wan_core", "validate-dataset", *args], capture_output=True,
                          text=True, timeout=300)


def test_each_broken_entry_gets_its_reason(corpus):
    import re

    from wan_core.data.manifest import validate_dataset

    root, entries, dataset_reasons = corpus
    results, thumbs = validate_dataset(root / "data.txt")
    per_entry = [r for r in results if r.index is not None]
    assert len(per_entry) == len(entries)
    kinds = set()
    for r, (_, expected) in zip(per_entry, entries):
        if expected is None:
            assert r.reason is None, (r.path, r.reason)
        else:
            assert r.reason is not None and re.search(expected, r.reason), (r.path, expected, r.reason)
            kinds.add(expected)
    dataset_level = [r for r in results if r.index is None]
    assert len(dataset_level) == len(dataset_reasons)
    for r, expected in zip(dataset_level, dataset_reasons):
        assert re.search(expected, r.reason), (expected, r.reason)
        kinds.add(expected)
    assert len(kinds) >= 20
    assert thumbs


def test_cli_report_manifest_and_exit_codes(corpus, tmp_path):
    root, entries, _ = corpus
    r = run("--data-txt", str(root / "data.txt"), "--report-dir", str(tmp_path / "rep"),
            "--manifest-out", str(tmp_path / "manifest.json"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [os.path.basename(e["path"]) for e in manifest] == ["good.mp4", "good2.mp4", "good3.mp4", "good4.mp4",
                                                               "captions.mp4", "absolute.mp4"]
    assert manifest[4]["cap"] == ["a red circle", "a circle moving right"]  # training draws one per sample
    from wan_core.data.manifest import load_manifest

    assert load_manifest(tmp_path / "manifest.json") == manifest  # what validation accepts, training reads
    assert len(manifest) == sum(1 for _, e in entries if e is None)
    assert all(os.path.isabs(e["path"]) and e["dataset"].endswith("ds") for e in manifest)
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "through a symlink" in report and "escape.mp4" in report and f"valid: {len(manifest)}" in report
    assert "data:image/png;base64" in (tmp_path / "rep" / "report.html").read_text()
    r = run("--data-txt", str(root / "data.txt"), "--allow-invalid")
    assert r.returncode == 0
    assert run("--data-txt", str(tmp_path / "nope.txt")).returncode == 2
    (tmp_path / "junk.txt").write_bytes(b"\xff\xfe\x00junk")
    r = run("--data-txt", str(tmp_path / "junk.txt"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_demo_dataset_is_valid(tmp_path):
    from wan_core.data.demo import make_demo_dataset

    ds = make_demo_dataset(tmp_path / "demo", videos=2)
    r = run("--data-txt", str(ds / "data.txt"), "--manifest-out", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    assert len(json.loads((tmp_path / "m.json").read_text())) == 2


def test_workers_give_the_same_report_in_entry_order(corpus, monkeypatch):
    """A process pool probes the videos; verdicts, their order, the manifest and the thumbnails are those of one
    process (duplicates included: the first valid one wins in entry order)."""
    import concurrent.futures

    import numpy as np

    from wan_core.data import manifest

    root, _, _ = corpus
    serial, serial_thumbs = manifest.validate_dataset(root / "data.txt", workers=1)
    pools = []

    class CountedPool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", CountedPool)
    monkeypatch.setattr(manifest, "POOL_MIN_ITEMS", 2)
    pooled, pooled_thumbs = manifest.validate_dataset(root / "data.txt", workers=2)
    assert pools and pools[0][0] == 1  # the pool really ran: 1 process beside this one
    assert pooled == serial and any(r.reason is None for r in serial) and any(r.reason for r in serial)
    assert [n for n, _ in pooled_thumbs] == [n for n, _ in serial_thumbs]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(pooled_thumbs, serial_thumbs))
