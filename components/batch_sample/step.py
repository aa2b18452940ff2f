"""The batch-sample step: wan22 sample's job, with its HTML preview as the step's artifact."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def sample_step(model: str, prompts: str, output: str, images: str, size: tuple[int, int, int], steps: int,
                guidance: str, seed: int, nproc: int, preview_html: Path, log_metric: Callable[[str, float], None],
                layout: dict | None = None) -> str:
    """`layout`: SampleJob's cp, cp_algo, ulysses_degree, cfg_parallel, shard_weights and offload (validated there,
    before any weight loads)."""
    import shutil
    import tempfile

    from wan_core.sample.run import SampleJob, run_sample
    from wan_core.storage import is_url, local_copy, output_dir

    # a model and an output on object storage are staged here: diffusers and the video writer read and write files
    with local_copy(model) as local_model, tempfile.TemporaryDirectory(prefix="wan22-samples-") as stage:
        local_out = Path(stage) / "samples" if is_url(output) else Path(output)
        job = SampleJob(model=str(local_model), prompts=prompts, output=str(local_out), images=images or None,
                        size=tuple(size) if all(size) else None, steps=steps or None,
                        guidance=[float(g) for g in guidance.split()] if guidance else None, seed=seed, nproc=nproc,
                        overwrite=True, **(layout or {}))  # a retried step replaces its own earlier samples
        out = run_sample(job, progress=False)
        preview_html.write_text((out / "preview.html").read_text())
        index = json.loads((out / "samples.json").read_text())
        if is_url(output):
            with output_dir(output, "sample", overwrite=True) as upload:
                shutil.copytree(out, upload, dirs_exist_ok=True)
    log_metric("videos", len(index["samples"]))
    return output
