import json

import yaml

from components.cache_features import cache_features


def test_encodes_the_dataset(tmp_path, tiny_checkpoints, demo_dataset):
    cfg = {"model": {"from_pretrained": str(tiny_checkpoints["ti2v-5b"]), "variant": "ti2v-5b"},
           "save_path": "save", "data": {"data_txt": str(demo_dataset / "data.txt"), "num_frames": 9, "height": 32,
                                         "width": 32, "fps": 16}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    out = cache_features.python_func(config=str(tmp_path / "train.yaml"), out=str(tmp_path / "features"))
    meta = json.loads((tmp_path / "features" / "features.json").read_text())
    assert out == str(tmp_path / "features") and meta["entries"] == 2 and meta["variant"] == "ti2v-5b"
