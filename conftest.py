import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """One tiny pipeline folder per variant, made once per session with the public command's code."""
    from wan_core.model.variants import VARIANTS
    from wan_core.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    return {v: make_tiny_checkpoint(v, root / v, seed=1) for v in VARIANTS}


class FakeArtifact:
    """What a component body sees of an Output[...] artifact: a local path and log_metric."""

    def __init__(self, path):
        self.path = str(path)
        self.metrics = {}

    def log_metric(self, name, value):
        self.metrics[name] = value


@pytest.fixture
def artifact(tmp_path):
    return lambda name: FakeArtifact(tmp_path / name)


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    from wan_core.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo-data") / "demo", videos=2)


def read_safetensors(folder):
    """Every tensor of the .safetensors files in a folder, read with the safetensors library itself
    (independent of wan_core's streaming reader)."""
    import os

    from safetensors.torch import load_file

    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            out.update(load_file(os.path.join(folder, name)))
    return out
