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
