"""The demo dataset: MindSpeed-MM's data.json / data.txt formats, real mp4 files readable by both decoders."""
import json
import subprocess
import sys

import numpy as np
import pytest

from wan_core.data.demo import COLORS, render_clip
from wan_core.data.video import probe_video, read_frames


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "dataset"
    result = subprocess.run([sys.executable, "-m", "wan_core", "make-demo-dataset", "--out", str(out), "--videos", "3"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def test_layout_follows_the_seed_format(dataset):
    entries = json.loads((dataset / "data.json").read_text())
    assert len(entries) == 3
    for e in entries:
        assert set(e) == {"path", "cap", "num_frames", "fps", "resolution"}
        assert set(e["resolution"]) == {"height", "width"}
        assert e["path"].startswith("videos/") and (dataset / e["path"]).is_file()
        assert isinstance(e["cap"], str) and e["cap"]
        assert (e["num_frames"] - 1) % 4 == 0
    folder, data_json = (dataset / "data.txt").read_text().strip().split(",")
    assert folder == str(dataset) and data_json == str(dataset / "data.json")


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_videos_decode_with_both_backends(dataset, backend):
    pytest.importorskip("decord") if backend == "decord" else None
    entries = json.loads((dataset / "data.json").read_text())
    for i, e in enumerate(entries):
        info = probe_video(dataset / e["path"], backend=backend)
        assert (info.num_frames, info.height, info.width) == (e["num_frames"], e["resolution"]["height"],
                                                              e["resolution"]["width"])
        assert abs(info.fps - e["fps"]) < 1e-6
        frames = read_frames(dataset / e["path"], backend=backend)
        assert frames.shape == (e["num_frames"], e["resolution"]["height"], e["resolution"]["width"], 3)
        original, caption = render_clip(i, e["num_frames"], e["resolution"]["height"], e["resolution"]["width"])
        assert caption == e["cap"]
        # lossy H.264, but the decoded clip is the rendered one (mean error of a few grey levels)
        assert np.abs(frames.astype(float) - original.astype(float)).mean() < 6
        color = np.array(next(c for name, c in COLORS.items() if name in caption))
        assert (np.abs(frames[0].astype(int) - color).sum(-1) < 60).any()


def test_decoders_agree(dataset):
    pytest.importorskip("decord")
    path = dataset / "videos" / "video0002.mp4"
    a = read_frames(path, [0, 5, 32], backend="decord").astype(int)
    b = read_frames(path, [0, 5, 32], backend="pyav").astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() < 2
