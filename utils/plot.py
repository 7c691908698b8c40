"""A line plot as a PNG, drawn with Pillow: the project needs no plotting library for one chart."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))
W, H, PAD = 640, 400, 60


def line_plot(path: Path, x: list[float], series: dict[str, list[float]], xlabel: str, ylabel: str) -> None:
    """Each series against x, with its min and max marked on the axes and a legend."""
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    ys = [v for vs in series.values() for v in vs]
    x0, x1 = min(x), max(x)
    y0, y1 = min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def to_px(xv: float, yv: float) -> tuple[float, float]:
        return (PAD + (xv - x0) / (x1 - x0) * (W - 2 * PAD), H - PAD - (yv - y0) / (y1 - y0) * (H - 2 * PAD))

    d.rectangle([PAD, PAD, W - PAD, H - PAD], outline="black")
    d.text((PAD, H - PAD + 5), f"{x0:,.0f}", fill="black")
    d.text((W - PAD - 40, H - PAD + 5), f"{x1:,.0f}", fill="black")
    d.text((W / 2 - 30, H - PAD + 25), xlabel, fill="black")
    d.text((5, H - PAD - 10), f"{y0:.3g}", fill="black")
    d.text((5, PAD), f"{y1:.3g}", fill="black")
    d.text((PAD, PAD - 40), ylabel, fill="black")
    for i, (name, vs) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = [to_px(xv, yv) for xv, yv in zip(x, vs, strict=True)]
        if len(points) > 1:
            d.line(points, fill=colour, width=2)
        for px, py in points:
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        d.text((W - PAD - 120, PAD + 5 + 15 * i), f"- {name}", fill=colour)
    img.save(path)
