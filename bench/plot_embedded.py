#!/usr/bin/env python3
"""Draws record_event's throughput against SQLite's at 1, 4 and 16 callers (threads of one
process, and processes) as an SVG, from `bench/run --only embedded --json FILE` (or the
JSON `bench/embedded.py` prints): events per second, median of the repetitions, one line
per series.

    bench/plot_embedded.py REPORT.json OUT.svg [KEY [LABEL]]

KEY picks the run in a bench/run report: `embedded` (the scratch directory, the default) or
`embedded_journal` (the ext4 image with a journal); LABEL names its file system in the title.
"""
import json
import statistics
import sys

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 360, 70, 210, 30, 50
SERIES = [("tmpa threads", "TMPA, threads of one process", "#1f77b4", ""),
          ("tmpa processes", "TMPA, processes", "#1f77b4", "6,4"),
          ("sqlite threads", "SQLite, threads of one process", "#d62728", ""),
          ("sqlite processes", "SQLite, processes", "#d62728", "6,4")]
CALLERS = [1, 4, 16]


def main():
    report, out = sys.argv[1], sys.argv[2]
    key = sys.argv[3] if len(sys.argv) > 3 else "embedded"
    where = f", {sys.argv[4]}" if len(sys.argv) > 4 else ""
    with open(report) as fh:
        doc = json.load(fh)
    rec = doc.get("extra", {}).get(key, doc)["record_per_s"]
    med = {k: statistics.median(v) for k, v in rec.items()}
    y_max = max(med.values()) * 1.15
    px = lambda i: PAD_L + i / (len(CALLERS) - 1) * (W - PAD_L - PAD_R)
    py = lambda y: H - PAD_B - y / y_max * (H - PAD_T - PAD_B)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{PAD_L}" y="18" font-size="14">record_event vs SQLite (WAL, synchronous=FULL), '
           f'same run{where}</text>',
           f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="black"/>',
           f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="black"/>']
    for i, n in enumerate(CALLERS):
        svg.append(f'<text x="{px(i):.1f}" y="{H - PAD_B + 18}" text-anchor="middle">{n}</text>')
    svg.append(f'<text x="{(PAD_L + W - PAD_R) / 2:.1f}" y="{H - 10}" text-anchor="middle">'
               f'concurrent callers</text>')
    step = 1000 if y_max > 4000 else 500
    y = 0
    while y <= y_max:
        svg.append(f'<line x1="{PAD_L}" y1="{py(y):.1f}" x2="{W - PAD_R}" y2="{py(y):.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{PAD_L - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += step
    svg.append(f'<text x="16" y="{(PAD_T + H - PAD_B) / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(PAD_T + H - PAD_B) / 2:.1f})">events per second</text>')
    for k, (key, label, color, dash) in enumerate(SERIES):
        pts = [(px(i), py(med[f"{key} {n}"])) for i, n in enumerate(CALLERS)]
        d = f' stroke-dasharray="{dash}"' if dash else ""
        svg.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="none" '
                   f'stroke="{color}" stroke-width="2"{d}/>')
        for x, y in pts:
            svg.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        ly = PAD_T + 20 + 20 * k
        svg.append(f'<line x1="{W - PAD_R + 15}" y1="{ly}" x2="{W - PAD_R + 35}" y2="{ly}" '
                   f'stroke="{color}" stroke-width="2"{d}/>')
        svg.append(f'<text x="{W - PAD_R + 40}" y="{ly + 4}">{label}</text>')
    svg.append("</svg>")
    with open(out, "w") as fh:
        fh.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
