"""The training curve: the loss per step as an SVG chart and a self-contained HTML page (the pretrain step's
artifact in the Kubeflow UI, and a section of the local run's report). No plotting library needed."""
from __future__ import annotations

import html
import json
from pathlib import Path


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    import math

    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count - 1)
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def loss_curve_svg(rows: list[dict], width: int = 520, height: int = 240) -> str:
    """The loss per step as an SVG line chart with labelled axes and ticks (no plotting library needed)."""
    left, right, top, bottom = 58, 14, 12, 42
    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    xt, yt = nice_ticks(min(steps), max(steps)), nice_ticks(min(losses), max(losses))
    x0, x1, y0, y1 = min(xt[0], min(steps)), max(xt[-1], max(steps)), min(yt[0], min(losses)), max(yt[-1], max(losses))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def x(v):
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def y(v):
        return height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)

    parts = [f"<svg class='curve' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
             "xmlns='http://www.w3.org/2000/svg' role='img' aria-label='training loss per step'>",
             f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' y2='{height - bottom}' stroke='#333'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' stroke='#333'/>"]
    for v in xt:
        if x0 <= v <= x1:
            parts.append(f"<line x1='{x(v):.1f}' y1='{height - bottom}' x2='{x(v):.1f}' y2='{height - bottom + 4}' "
                         f"stroke='#333'/><text x='{x(v):.1f}' y='{height - bottom + 16}' font-size='11' "
                         f"text-anchor='middle'>{v:g}</text>")
    for v in yt:
        if y0 <= v <= y1:
            parts.append(f"<line x1='{left - 4}' y1='{y(v):.1f}' x2='{width - right}' y2='{y(v):.1f}' stroke='#ddd'/>"
                         f"<text x='{left - 6}' y='{y(v) + 4:.1f}' font-size='11' text-anchor='end'>{v:.4g}</text>")
    points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(steps, losses))
    parts += [f"<polyline fill='none' stroke='#1f77b4' stroke-width='2' points='{points}'/>",
              *(f"<circle cx='{x(s):.1f}' cy='{y(v):.1f}' r='2.5' fill='#1f77b4'/>" for s, v in zip(steps, losses)),
              f"<text x='{(left + width - right) / 2:.0f}' y='{height - 6}' font-size='12' text-anchor='middle'>"
              "training step</text>",
              f"<text x='14' y='{(top + height - bottom) / 2:.0f}' font-size='12' text-anchor='middle' "
              f"transform='rotate(-90 14 {(top + height - bottom) / 2:.0f})'>loss</text></svg>"]
    return "".join(parts)


def read_metrics(metrics_path) -> list[dict]:
    """The rows of a metrics.jsonl (a local path or a wan_core.storage.Location)."""
    if not metrics_path.is_file():
        return []
    return [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]


def training_curve_html(metrics_path, title: str) -> str:
    """A self-contained HTML page with the loss curve (the pretrain step's artifact in the Kubeflow UI)."""
    rows = read_metrics(metrics_path)
    if not rows:
        return f"<html><body><h3>{html.escape(title)}</h3><p>no metrics</p></body></html>"
    last = rows[-1]
    return (f"<html><head><meta charset='utf-8'></head><body><h3>{html.escape(title)}</h3>{loss_curve_svg(rows)}"
            f"<p>last step {last['step']}: loss {last['loss']:.5f}, lr {last['lr']:.2e}, grad norm "
            f"{last['grad_norm']:.3f}, {last['samples_per_s']:.2f} samples/s</p></body></html>")
