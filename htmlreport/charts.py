"""SVG charts of the report page: a line chart (curves per epoch) and grouped horizontal bars."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from htmlreport.numbers import esc, fmt, nice_ticks, tick_label

Series = tuple[str, str, list[tuple[float, float]]]  # (name, colour, [(x, y)])
HLine = tuple[str, str, float | None]  # (name, colour, y): a dashed reference line


@dataclass
class _Frame:
    """Where the plot sits in the SVG, and the data ranges it maps."""

    left: float
    top: float
    width: float  # of the plot area
    height: float
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float

    def sx(self, x: float) -> float:
        return self.left + (x - self.x_lo) / (self.x_hi - self.x_lo) * self.width

    def sy(self, y: float) -> float:
        return self.top + (1 - (y - self.y_lo) / (self.y_hi - self.y_lo)) * self.height


def _legend(series: Sequence[Series], hlines: Sequence[HLine], left: int, right_edge: int) -> list[tuple]:
    """(name, colour, dashed, x, y) of each legend item, wrapped to the plot's width below the title."""
    items = [(n, c, False) for n, c, pts in series if any(p[1] is not None for p in pts)]
    items += [(n, c, True) for n, c, v in hlines if v is not None]
    legend, lx, ly = [], left, 36
    for name, color, dashed in items:
        item_width = 30 + 6 * len(name)
        if lx + item_width > right_edge and lx > left:
            lx, ly = left, ly + 15
        legend.append((name, color, dashed, lx, ly))
        lx += item_width
    return legend


def _y_range(ys: list[float], y_range: tuple[float, float] | None) -> tuple[float, float]:
    """The y axis: the given range widened to the data, else the data padded by 8% (from 0 when all >= 0)."""
    if y_range:
        return min(y_range[0], min(ys)), max(y_range[1], max(ys))
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.08 or abs(y_hi) * 0.1 or 1.0
    y_lo, y_hi = y_lo - pad, y_hi + pad
    if min(ys) >= 0 > y_lo:
        y_lo = 0.0
    return y_lo, y_hi


def _axes(f: _Frame, total_height: float, x_label: str, y_label: str) -> list[str]:
    """Grid lines with y ticks, integer x ticks, and the axis labels."""
    out = []
    for t in nice_ticks(f.y_lo, f.y_hi):
        y = f.sy(t)
        out.append(
            f'<line x1="{f.left}" x2="{f.left + f.width}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{f.left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{tick_label(t)}</text>'
        )
    for t in nice_ticks(f.x_lo, f.x_hi, 8):
        if float(t).is_integer() or (f.x_hi - f.x_lo) < 8:
            out.append(
                f'<text x="{f.sx(t):.1f}" y="{f.top + f.height + 16}" class="tick" text-anchor="middle">'
                f"{tick_label(t)}</text>"
            )
    middle = f.left + f.width / 2
    out.append(f'<text x="{middle}" y="{total_height - 8}" class="axis" text-anchor="middle">{esc(x_label)}</text>')
    if y_label:
        mid_y = f.top + f.height / 2
        out.append(
            f'<text x="14" y="{mid_y}" class="axis" text-anchor="middle" '
            f'transform="rotate(-90 14 {mid_y})">{esc(y_label)}</text>'
        )
    return out


def _lines(f: _Frame, series: Sequence[Series], hlines: Sequence[HLine]) -> list[str]:
    """Dashed reference lines, then one polyline with a dot per point for each series."""
    out = []
    for name, color, value in hlines:
        if value is None:
            continue
        y = f.sy(value)
        out.append(
            f'<line x1="{f.left}" x2="{f.left + f.width}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}" '
            f'stroke-width="1.5" stroke-dasharray="6 4"><title>{esc(name)}: {fmt(value)}</title></line>'
        )
    for name, color, pts in series:
        pts = [p for p in pts if p[1] is not None]
        if not pts:
            continue
        coords = " ".join(f"{f.sx(x):.1f},{f.sy(y):.1f}" for x, y in pts)
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2">'
            f"<title>{esc(name)}</title></polyline>"
        )
        for x, y in pts:
            out.append(
                f'<circle cx="{f.sx(x):.1f}" cy="{f.sy(y):.1f}" r="2.5" fill="{color}">'
                f"<title>{esc(name)}, epoch {esc(fmt(x))}: {fmt(y)}</title></circle>"
            )
    return out


def line_chart(
    title: str,
    series: Sequence[Series],
    hlines: Sequence[HLine] = (),
    y_label: str = "",
    x_label: str = "epoch",
    y_range: tuple[float, float] | None = None,
    width: int = 520,
    height: int = 300,
) -> str:
    """An SVG line chart: one polyline per series, dashed horizontal reference lines, axes and a legend."""
    points = [p for _, _, pts in series for p in pts if p[1] is not None]
    if not points:
        return ""
    left, right, bottom = 56, 16, 44
    legend = _legend(series, hlines, left, width - right)
    top = (legend[-1][4] if legend else 36) + 12  # the legend sits between the title and the plot
    height += top - 34
    xs = [p[0] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = _y_range([p[1] for p in points] + [v for _, _, v in hlines if v is not None], y_range)
    frame = _Frame(left, top, width - left - right, height - top - bottom, x_lo, x_hi, y_lo, y_hi)
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{esc(title)}">',
        f'<text x="{left}" y="20" class="ct">{esc(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{frame.width}" height="{frame.height}" class="plot"/>',
        *_axes(frame, height, x_label, y_label),
        *_lines(frame, series, hlines),
    ]
    for name, color, dashed, lx, ly in legend:
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        out.append(
            f'<line x1="{lx}" x2="{lx + 18}" y1="{ly}" y2="{ly}" stroke="{color}" '
            f'stroke-width="2.5"{dash}/><text x="{lx + 22}" y="{ly + 4}" class="leg">{esc(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    title: str,
    groups: Sequence[tuple[str, Sequence[tuple[str, str, float | None]]]],
    unit: str = "",
    width: int = 520,
    bar_height: int = 20,
) -> str:
    """Horizontal bars, grouped: [(group label, [(bar label, color, value)])]; values labelled with fmt."""
    rows = [(g, label, color, v) for g, bars in groups for label, color, v in bars if v is not None]
    if not rows:
        return ""
    left, right, top = 150, 150, 34
    peak = max(v for *_, v in rows) or 1.0
    pw = width - left - right
    y = top
    out = []
    for group, bars in groups:
        bars = [b for b in bars if b[2] is not None]
        if not bars:
            continue
        out.append(f'<text x="8" y="{y + 14}" class="axis">{esc(group)}</text>')
        y += 20
        for label, color, value in bars:
            assert value is not None  # filtered above
            w = max(1.0, value / peak * pw)
            out.append(
                f'<text x="{left - 6}" y="{y + bar_height - 6}" class="tick" text-anchor="end">'
                f'{esc(label)}</text><rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_height}" '
                f'fill="{color}"><title>{esc(label)}: {fmt(value)} {esc(unit)}</title></rect>'
                f'<text x="{left + w + 6:.1f}" y="{y + bar_height - 6}" class="tick">{fmt(value)} '
                f"{esc(unit)}</text>"
            )
            y += bar_height + 4
        y += 8
    height = y + 8
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{esc(title)}">'
        f'<text x="8" y="20" class="ct">{esc(title)}</text>' + "".join(out) + "</svg>"
    )
