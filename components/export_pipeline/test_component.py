from components.export_pipeline import export_pipeline
from wan_core.weights.convert import hf_to_mm


def test_exports_a_loadable_pipeline_folder(tmp_path, tiny_checkpoints):
    from diffusers import WanPipeline

    base = tiny_checkpoints["ti2v-5b"]
    hf_to_mm(str(base / "transformer"), str(tmp_path / "mm"), progress=False)
    out = export_pipeline.python_func(source=str(tmp_path / "mm"), base=str(base), target="exported",
                                      workdir=str(tmp_path))
    pipe = WanPipeline.from_pretrained(out)
    assert pipe.transformer.config.in_channels == 48 and pipe.transformer_2 is None
