#!/usr/bin/env python3
"""Draws the scaling rows of a `bench/run --json FILE` report as an SVG (no dependencies):
microseconds per file against the number of files, log scale, one line per series. A flat
line is linear cost; a rising one would be worse than linear.

    bench/plot_scaling.py REPORT.json OUT.svg
"""
import json
import math
import sys

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 360, 70, 190, 30, 50
SERIES = [("compaction, one day", "#1f77b4"), ("compaction, ten days", "#2ca02c"),
          ("patrol (full check)", "#d62728")]


def main():
    report, out = sys.argv[1], sys.argv[2]
    with open(report) as fh:
        rows = [r for r in json.load(fh)["rows"] if r["target"] == "linear"]
    if not rows:
        raise SystemExit(f"{report}: no scaling rows (run bench/run --only scaling)")
    points = []  # (files, [one, ten, patrol])
    for r in rows:
        n = int(r["bench"].split()[1])
        points.append((n, [r["ours_median"], r["base_min"], r["base_median"]]))
    points.sort()
    xs = [math.log10(n) for n, _ in points]
    y_max = max(v for _, vs in points for v in vs) * 1.15
    x0, x1 = min(xs), max(xs)
    x0, x1 = (x0 - 0.5, x1 + 0.5) if x0 == x1 else (x0, x1)

    def px(x):
        return PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def py(y):
        return H - PAD_B - y / y_max * (H - PAD_T - PAD_B)

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{PAD_L}" y="18" font-size="14">Cost per file as the tree grows '
           f'(flat = linear)</text>']
    # Axes, ticks and grid.
    svg.append(f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="black"/>')
    svg.append(f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="black"/>')
    for n, _ in points:
        x = px(math.log10(n))
        svg.append(f'<line x1="{x:.1f}" y1="{H - PAD_B}" x2="{x:.1f}" y2="{H - PAD_B + 5}" stroke="black"/>')
        svg.append(f'<text x="{x:.1f}" y="{H - PAD_B + 18}" text-anchor="middle">{n:,}</text>')
    svg.append(f'<text x="{(PAD_L + W - PAD_R) / 2:.1f}" y="{H - 10}" text-anchor="middle">'
               f'files (log scale)</text>')
    step = 10 ** math.floor(math.log10(y_max / 4))
    step *= 5 if y_max / step > 20 else (2 if y_max / step > 8 else 1)
    y = 0.0
    while y <= y_max:
        svg.append(f'<line x1="{PAD_L}" y1="{py(y):.1f}" x2="{W - PAD_R}" y2="{py(y):.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{PAD_L - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += step
    svg.append(f'<text x="16" y="{(PAD_T + H - PAD_B) / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(PAD_T + H - PAD_B) / 2:.1f})">µs per file</text>')
    for k, (name, color) in enumerate(SERIES):
        pts = " ".join(f"{px(math.log10(n)):.1f},{py(vs[k]):.1f}" for n, vs in points)
        svg.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for n, vs in points:
            svg.append(f'<circle cx="{px(math.log10(n)):.1f}" cy="{py(vs[k]):.1f}" r="3" fill="{color}"/>')
        ly = PAD_T + 20 + 20 * k
        svg.append(f'<line x1="{W - PAD_R + 15}" y1="{ly}" x2="{W - PAD_R + 35}" y2="{ly}" '
                   f'stroke="{color}" stroke-width="2"/>')
        svg.append(f'<text x="{W - PAD_R + 40}" y="{ly + 4}">{name}</text>')
    svg.append("</svg>")
    with open(out, "w") as fh:
        fh.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
