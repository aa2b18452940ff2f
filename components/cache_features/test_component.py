import yaml

from components.cache_features import cache_features
from wan_core.train.inputs import FeatureStore

DOCUMENT = yaml.safe_dump({"model": {"variant": "ti2v-5b"}, "data": {"num_frames": 9, "height": 32, "width": 32}})


def test_cache_then_nothing_when_disabled(tmp_path, tiny_checkpoints, demo_dataset):
    from wan_core.data.manifest import validate_dataset, write_manifest

    manifest = tmp_path / "manifest.json"
    valid = [r.entry for r in validate_dataset(demo_dataset / "data.txt")[0] if r.reason is None]
    write_manifest(str(manifest), valid)
    common = dict(train_config=DOCUMENT, train_set=[], base_model=str(tiny_checkpoints["ti2v-5b"]),
                  manifest=str(manifest), target="features", workdir=str(tmp_path))
    assert cache_features.python_func(enabled=False, **common) == "" and not (tmp_path / "features").exists()
    out = cache_features.python_func(enabled=True, **common)
    assert out == str(tmp_path / "features")
    store = FeatureStore(out)
    assert store.count == len(valid) > 0 and store.meta["num_frames"] == 9


def test_a14b_features_serve_both_experts(tmp_path, tiny_checkpoints, demo_dataset):
    from wan_core.data.manifest import validate_dataset, write_manifest
    from wan_core.train.config import resolve_document

    manifest = tmp_path / "manifest.json"
    write_manifest(str(manifest), [r.entry for r in validate_dataset(demo_dataset / "data.txt")[0] if r.reason is None])
    document = DOCUMENT.replace("ti2v-5b", "t2v-a14b")
    out = cache_features.python_func(enabled=True, train_config=document, train_set=[],
                                     base_model=str(tiny_checkpoints["t2v-a14b"]), manifest=str(manifest),
                                     target="features", workdir=str(tmp_path))
    for expert in ("high", "low"):
        cfg = resolve_document(document, [f"model.expert={expert}", f"model.from_pretrained={tiny_checkpoints['t2v-a14b']}",
                                          f"data.features={out}", f"save_path={tmp_path / expert}"])
        FeatureStore(out).check_compatible(cfg)
