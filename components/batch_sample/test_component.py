import json

from components.batch_sample import batch_sample


def test_samples_and_previews(tmp_path, tiny_checkpoints, artifact):
    (tmp_path / "prompts.txt").write_text("a red circle\na blue square\n")
    preview, metrics = artifact("preview.html"), artifact("metrics")
    out = batch_sample.python_func(model=str(tiny_checkpoints["t2v-a14b"]), prompts=str(tmp_path / "prompts.txt"),
                                   output="samples", workdir=str(tmp_path), preview=preview, metrics=metrics,
                                   frames=5, height=16, width=16, steps=2, guidance="4 3")
    index = json.loads((tmp_path / "samples" / "samples.json").read_text())
    assert out == str(tmp_path / "samples") and [s["video"] for s in index["samples"]] == ["0000.mp4", "0001.mp4"]
    assert index["settings"]["guidance"] == [4.0, 3.0] and metrics.metrics == {"videos": 2}
    assert "data:image/gif;base64," in open(preview.path).read()


def test_a_layout_makes_each_video_on_two_processes(tmp_path, tiny_checkpoints, artifact):
    """The step's layout parameters reach wan22 sample: 2 processes share each video (CP 2 Ring), frames as one."""
    import numpy as np

    (tmp_path / "prompts.txt").write_text("a red circle\n")
    common = dict(model=str(tiny_checkpoints["ti2v-5b"]), prompts=str(tmp_path / "prompts.txt"), workdir=str(tmp_path),
                  frames=5, height=32, width=32, steps=2)
    batch_sample.python_func(output="one", preview=artifact("a.html"), metrics=artifact("a"), **common)
    batch_sample.python_func(output="two", preview=artifact("b.html"), metrics=artifact("b"), nproc=2, cp=2,
                             cp_algo="ring", offload="none", **common)
    index = json.loads((tmp_path / "two" / "samples.json").read_text())
    assert index["settings"]["layout"]["cp"] == 2 and index["settings"]["offload"] == "none"
    import av

    def frames(folder):
        with av.open(str(tmp_path / folder / "0000.mp4")) as video:
            return np.stack([f.to_ndarray(format="rgb24") for f in video.decode(video=0)])
    assert np.array_equal(frames("one"), frames("two"))
