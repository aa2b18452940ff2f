"""The compare-LoRA step: every prompt sampled without and with the adapters, side by side in one page."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Callable


def compare_lora_step(model: str, lora: str, lora_2: str, prompts: str, output: str, images: str,
                      size: tuple[int, int, int], steps: int, seed: int, preview_html: Path,
                      log_metric: Callable[[str, float], None]) -> str:
    """Every prompt sampled without and with the adapters (same seeds) into OUTPUT/base and OUTPUT/lora, and one
    HTML page with each pair side by side (the clips inline, so the Kubeflow UI plays them)."""
    import base64

    from wan_core.sample.run import SampleJob, run_sample
    from wan_core.storage import output_dir

    common = dict(model=model, prompts=prompts, images=images or None, size=tuple(size) if all(size) else None,
                  steps=steps or None, seed=seed, overwrite=True)
    with output_dir(output, "compare-lora", overwrite=True) as tmp:
        run_sample(SampleJob(output=str(tmp / "base"), **common), progress=False)
        run_sample(SampleJob(output=str(tmp / "lora"), lora=lora, lora_2=lora_2 or None, **common), progress=False)
        samples = {kind: json.loads((tmp / kind / "samples.json").read_text())["samples"] for kind in ("base", "lora")}

        def clip(kind: str, record: dict) -> str:
            data = (tmp / kind / record["video"]).read_bytes()
            src = ("data:video/mp4;base64," + base64.b64encode(data).decode() if len(data) < 4 * 2**20
                   else f"{kind}/{record['video']}")
            return (f"<figure><video src='{src}' autoplay loop muted playsinline width='256'></video>"
                    f"<figcaption>{'without' if kind == 'base' else 'with'} the adapter</figcaption></figure>")

        rows = "".join(f"<h4>{html.escape(a['prompt'])} (seed {a['seed']})</h4><div>{clip('base', a)}{clip('lora', b)}"
                       "</div>" for a, b in zip(samples["base"], samples["lora"]))
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>LoRA: with and without</title><style>"
                "body{font-family:system-ui,sans-serif}figure{display:inline-block;margin:6px;text-align:center}"
                "video{image-rendering:pixelated}</style></head><body><h3>Samples without and with the LoRA adapter"
                f"</h3>{rows}</body></html>\n")
        (tmp / "compare.html").write_text(page)
    preview_html.write_text(page)
    log_metric("prompts", len(samples["base"]))
    return output
