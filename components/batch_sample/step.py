"""The batch-sample step: wan22 sample's job, with its HTML preview as the step's artifact."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def sample_step(model: str, prompts: str, output: str, images: str, size: tuple[int, int, int], steps: int,
                guidance: str, seed: int, nproc: int, preview_html: Path, log_metric: Callable[[str, float], None]) -> str:
    from wan_core.sample.run import SampleJob, run_sample

    job = SampleJob(model=model, prompts=prompts, output=output, images=images or None,
                    size=tuple(size) if all(size) else None, steps=steps or None,
                    guidance=[float(g) for g in guidance.split()] if guidance else None, seed=seed, nproc=nproc,
                    overwrite=True)  # a retried step replaces its own earlier samples
    out = run_sample(job, progress=False)
    preview_html.write_text((out / "preview.html").read_text())
    index = json.loads((out / "samples.json").read_text())
    log_metric("videos", len(index["samples"]))
    return str(out)
