from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def batch_sample(model: str, prompts: str, output: str, preview: Output[HTML], metrics: Output[Metrics],
                 images: str = "", frames: int = 0, height: int = 0, width: int = 0, steps: int = 0,
                 guidance: str = "", seed: int = 0, nproc: int = 1, workdir: str = "", cp: int = 1,
                 cp_algo: str = "ulysses", ulysses_degree: int = 0, cfg_parallel: bool = False,
                 shard_weights: bool = False, offload: str = "auto") -> str:
    """wan22 sample: one NNNN.mp4 per prompt under `output`; the HTML preview (inline clips) as the
    step's artifact. 0 / "" mean the variant's defaults. `nproc` processes, in groups of cp (x 2 with cfg_parallel)
    that each make one video (wan22 sample's --cp/--cp-algo/--ulysses-degree/--cfg-parallel/--shard-weights);
    `offload` as --offload (auto: the memory plan's choice). Returns the output folder."""
    import pathlib

    from components import under
    from components.batch_sample.step import sample_step

    layout = dict(cp=cp, cp_algo=cp_algo, ulysses_degree=ulysses_degree or None, cfg_parallel=cfg_parallel,
                  shard_weights=shard_weights, offload=offload)
    return sample_step(model, prompts, under(workdir, output), images, (frames, height, width), steps, guidance, seed, nproc,
                       pathlib.Path(preview.path), metrics.log_metric, layout)
