"""The HTML report of a local pipeline run (runs/<timestamp>/report.html): the steps in DAG order with
their times and key settings, the validation summary, loss curves with axes, the exported folder, and
the samples as playing videos with their prompts and seeds. Links are relative to the run folder, so
the folder can be moved or served as it is."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#222;line-height:1.4}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.note{background:#fff6d6;border:1px solid #e6c200;padding:8px 12px;border-radius:4px}
table.settings td{padding:2px 14px 2px 0}table.settings td:first-child{color:#666}
.time{color:#666;font-weight:normal;font-size:14px}
figure{display:inline-block;margin:8px;vertical-align:top;width:260px}
figure video,figure img{width:256px;image-rendering:pixelated;background:#000}
figcaption{font-size:13px}.thumbs figure{width:130px}.thumbs img{width:128px}
code{background:#f3f3f3;padding:0 3px}
"""

# kfp.local's task names, per report section (A14B adds -2, -3, ... to the names of its second branch)
SECTIONS = {
    "wan22-full": [("plan-training", "1. Check the training config"), ("validate-dataset", "2. Validate the dataset"),
                   ("convert-weights", "3. Convert the base weights"), ("cache-features", "4. Cache the features"),
                   ("pretrain", "5. Train"), ("consolidate", "6. Consolidate the checkpoints"),
                   ("export-pipeline", "7. Export a diffusers pipeline"), ("batch-sample", "8. Sample videos")],
    "wan22-lora": [("plan-training", "1. Check the training config"), ("validate-dataset", "2. Validate the dataset"),
                   ("convert-weights", "3. Convert the base weights"), ("pretrain", "4. Train LoRA adapters"),
                   ("export-lora", "5. Export the LoRA file(s)"), ("merge-lora", "6. Merge into a pipeline"),
                   ("compare-lora", "7. Sample without and with the adapter")],
}


def write_run_report(run_dir: Path, settings: dict, timings: dict[str, float], seconds: float) -> Path:
    work = run_dir / "work"
    link = Linker(run_dir)
    pipeline = settings.get("pipeline", "wan22-full")
    parts = [f"<h1>{_e(pipeline)} · {_e(settings['variant'])} · local run</h1>",
             f"<p>{seconds:.0f} s on this machine · run folder <code>{_e(run_dir)}</code> · "
             f"{link(run_dir / 'pipeline.log', 'full log')}</p>"]
    if settings.get("tiny"):
        parts.append("<p class='note'><b>Tiny random weights.</b> This run used a checkpoint made by "
                     "<code>wan22 make-tiny-checkpoint</code> (random weights, a few layers) and a synthetic dataset, "
                     "to exercise every step in minutes. The samples are noise by design; the loss curve shows that "
                     "training runs, not that it learns a useful model.</p>")
    parts.append("<table class='settings'>" + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
                                                     for k, v in settings.items() if k != "tiny") + "</table>")
    for key, title in SECTIONS[pipeline]:
        spent = sum(t for name, t in timings.items() if name == key or name.startswith(key + "-"))
        parts.append(f"<h2>{title} <span class='time'>{spent:.1f} s</span></h2>" if spent else f"<h2>{title}</h2>")
        parts.append(SECTION_BODIES[key](work, link))
    report = run_dir / "report.html"
    report.write_text("<!doctype html><html><head><meta charset='utf-8'><title>wan22 run: "
                      f"{_e(settings['variant'])}</title><style>{STYLE}</style></head><body>"
                      + "".join(parts) + "</body></html>\n")
    return report


def _plan(work: Path, link) -> str:
    """The config each training task read (the document, the run's overrides and the pipeline's wiring)."""
    import yaml

    configs = sorted(work.glob("train-*/train.yaml"))
    if not configs:
        return "<p>not run</p>"
    rows = []
    for path in configs:
        cfg = yaml.safe_load(path.read_text())
        p, t = cfg["parallel"], cfg["train"]
        layout = f"CP={p['cp']} {p['cp_algo']}" + (f", Ulysses {p['ulysses_degree']}" if p.get("ulysses_degree") else "")
        extras = [*(["activation checkpointing"] if t.get("activation_checkpointing") else []),
                  *([f"LoRA rank {t['lora']['rank']}"] if t.get("lora") else [])]
        rows.append(f"<li>{link(path, path.parent.name + '/' + path.name)}: {_e(cfg['model']['variant'])} "
                    f"{_e(cfg['model'].get('expert') or '')} · {t['iters']} steps · grad accumulation "
                    f"{t['grad_accum']} · {_e(' · '.join([layout, *extras]))}</li>")
    return "<p>validated once, before any other step; every rank read this file:</p><ul>" + "".join(rows) + "</ul>"


def _validation(work: Path, link) -> str:
    folder = work / "validation-report"
    manifest = work / "manifest.json"
    if not (folder / "report.md").is_file():
        return "<p>not run</p>"
    lines = (folder / "report.md").read_text().splitlines()
    counts = [x[2:] for x in lines if x.startswith("- ")]
    thumbs = sorted((folder / "thumbnails").glob("*.png"))
    figures = "".join(f"<figure><img src='{link.href(t)}' alt='{_e(t.stem)}'><figcaption>{_e(t.stem)}</figcaption>"
                      "</figure>" for t in thumbs)
    return (f"<p>{_e(', '.join(counts))} · {link(folder / 'report.html', 'validation report')} · "
            f"{link(manifest, 'manifest of valid entries')}</p><div class='thumbs'>{figures}</div>")


def _conversion(work: Path, link) -> str:
    base = work / "base-mm"
    if not base.is_dir():
        return "<p>not run</p>"
    slots = sorted(p.name for p in base.iterdir() if p.is_dir())
    return f"<p>mm layout of the base model: {', '.join(link(base / s, s) for s in slots)}</p>"


def _training(work: Path, link) -> str:
    from components.pretrain.curve import loss_curve_svg, read_metrics

    out = []
    for metrics in sorted(work.glob("train-*/metrics.jsonl")):
        folder = metrics.parent
        rows = read_metrics(metrics)
        if not rows:
            continue
        last = rows[-1]
        name = folder.name.removeprefix("train-")
        expert = {"dit": "the DiT", "high": "high-noise expert", "low": "low-noise expert"}.get(name, name)
        checkpoints = sorted(p.name for p in folder.glob("iter_*"))
        out.append(f"<h3>{_e(expert)}</h3>{loss_curve_svg(rows)}<p>step {last['step']}: loss {last['loss']:.4f}, "
                   f"lr {last['lr']:.1e}, grad norm {last['grad_norm']:.3f} · checkpoints "
                   f"{', '.join(link(folder / c, c) for c in checkpoints)} · {link(folder / 'tensorboard', 'TensorBoard logs')}"
                   f" · {link(metrics, 'metrics.jsonl')} · {link(folder / 'train.yaml', 'config')}</p>")
    return "".join(out) or "<p>not run</p>"


def _consolidation(work: Path, link) -> str:
    folders = sorted(work.glob("mm-*"))
    return f"<p>{', '.join(link(f, f.name) for f in folders)}</p>" if folders else "<p>not run</p>"


def _export(work: Path, link) -> str:
    exported = work / "exported"
    if not exported.is_dir():
        return "<p>not run</p>"
    parts = ", ".join(sorted(p.name for p in exported.iterdir() if not p.name.startswith(".")))
    return f"<p>{link(exported, 'exported/')} ({_e(parts)}): loads with diffusers' <code>WanPipeline.from_pretrained</code></p>"


def _samples(work: Path, link) -> str:
    samples = work / "samples"
    index_path = samples / "samples.json"
    if not index_path.is_file():
        return "<p>not run</p>"
    index = json.loads(index_path.read_text())
    figures = []
    for s in index["samples"]:
        figures.append(_media(samples / s["video"], link, f"<b>{_e(s['prompt'])}</b><br>seed {s['seed']}"))
    st = index.get("settings", {})
    size = "×".join(map(str, st.get("size", [])))
    return (f"<p>{len(figures)} videos · frames×height×width {size} · {st.get('steps')} steps · guidance "
            f"{st.get('guidance')} · {link(samples / 'preview.html', 'preview')} · {link(index_path, 'samples.json')}"
            f"</p>{''.join(figures)}")


def _lora_files(work: Path, link) -> str:
    files = sorted(work.glob("lora-*/pytorch_lora_weights.safetensors"))
    return (f"<p>{', '.join(link(f, f.parent.name + '/' + f.name) for f in files)}: diffusers' "
            "<code>WanPipeline.load_lora_weights</code> loads each (A14B low-noise expert: "
            "<code>load_into_transformer_2=True</code>)</p>") if files else "<p>not run</p>"


def _merged(work: Path, link) -> str:
    merged = work / "merged"
    return (f"<p>{link(merged, 'merged/')}: base + scale·(alpha/r)·B·A, a complete diffusers pipeline folder</p>"
            if merged.is_dir() else "<p>not run</p>")


def _comparison(work: Path, link) -> str:
    page = work / "compare" / "compare.html"
    if not page.is_file():
        return "<p>not run</p>"
    rows = []
    for kind in ("base", "lora"):
        index = json.loads((work / "compare" / kind / "samples.json").read_text())
        rows.append([work / "compare" / kind / s["video"] for s in index["samples"]])
    figures = "".join(
        f"<div>{''.join(_media(v, link, caption) for v, caption in ((a, 'without'), (b, 'with the adapter')))}</div>"
        for a, b in zip(*rows))
    return f"<p>{link(page, 'side by side')}</p>{figures}"


def _features(work: Path, link) -> str:
    """Whether training read a feature cache, and what it holds."""
    import json

    meta = work / "features" / "features.json"
    if not meta.is_file():
        return "<p>off (run parameter feature_cache): training encoded each clip as it read it</p>"
    info = json.loads(meta.read_text())
    return (f"<p>{info.get('entries')} clips encoded once ({_e(info.get('variant'))}, {info.get('num_frames')} frames of "
            f"{info.get('height')}×{info.get('width')}); every training task read {link(meta.parent, 'features/')} "
            "instead of running the encoders</p>")


def _media(video: Path, link, caption_html: str) -> str:
    """A clip as a playing video (or a GIF where the browser cannot play its codec) with a caption and its link."""
    media = (f"<video src='{link.href(video)}' autoplay loop muted playsinline controls></video>"
             if _browser_playable(video) else f"<img src='{_gif(video)}' alt='{_e(video.name)}'>")
    return f"<figure>{media}<figcaption>{caption_html} · {link(video, video.name)}</figcaption></figure>"


SECTION_BODIES = {"plan-training": _plan, "validate-dataset": _validation, "convert-weights": _conversion,
                  "cache-features": _features, "pretrain": _training,
                  "consolidate": _consolidation, "export-pipeline": _export, "batch-sample": _samples,
                  "export-lora": _lora_files, "merge-lora": _merged, "compare-lora": _comparison}


def _browser_playable(video: Path) -> bool:
    """H.264 in mp4 plays in every browser; other codecs (MPEG-4 Part 2) get an inline GIF instead."""
    import av

    try:
        with av.open(str(video)) as container:
            return container.streams.video[0].codec_context.name == "h264"
    except Exception:
        return False


def _gif(video: Path) -> str:
    from wan_core.data.video import read_frames
    from wan_core.sample.outputs import gif_data_uri

    return gif_data_uri(read_frames(video).astype("float32") / 255.0)


class Linker:
    """Relative links from the report (in the run folder) to files inside it."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def href(self, path: Path) -> str:
        return html.escape(os.path.relpath(path, self.run_dir), quote=True)

    def __call__(self, path: Path, text: str) -> str:
        if not Path(path).exists():
            return _e(text)
        return f"<a href='{self.href(path)}'>{_e(text)}</a>"


def _e(value) -> str:
    return html.escape(str(value), quote=True)
