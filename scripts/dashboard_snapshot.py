"""Renders infra/grafana/switchboard.json's panels from a real benchmark run.

Prometheus (Debian's) scrapes `switchboard serve` every second while `gateway-bench`
loads it (plain requests, then streams); then every panel's own PromQL queries are run
against Prometheus over the run, drawn as SVG in the dashboard's grid, and the page is
photographed by Chromium through Playwright. Grafana itself cannot be installed on these
machines; the queries, legends, units and layout are the dashboard file's.

Run by scripts/dashboard-snapshot (which installs what this needs).
"""

import html
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "dashboard"
TOKEN = "dashboard-snapshot-token-0123456789"
DASHBOARD = ROOT / "infra" / "grafana" / "switchboard.json"
OUT = ROOT / "docs" / "images" / "grafana-dashboard.png"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c", "#8ab8ff", "#96d98d"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(text: str) -> None:
    print(f"dashboard-snapshot: {text}", file=sys.stderr, flush=True)


def start_prometheus(serve_port: int, prom_port: int, fresh: bool = True) -> subprocess.Popen:
    data = WORK / "prometheus"
    if fresh:
        shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True, exist_ok=True)
    config = WORK / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: switchboard\n"
        "    metrics_path: /metrics\n"
        f"    authorization: {{credentials: {TOKEN}}}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{serve_port}']}}]\n"
    )
    log = open(WORK / "prometheus.log", "w")
    proc = subprocess.Popen(
        [
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=log,
        stderr=log,
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("prometheus did not start; see target/dashboard/prometheus.log")


def bench(serve_port: int, seconds: int, rate: int, stream: bool) -> None:
    args = [
        str(ROOT / "target" / "release" / "gateway-bench"),
        "--work-dir", str(WORK / "bench"),
        "--serve-port", str(serve_port),
        "--serve-env", f"SWITCHBOARD_METRICS_TOKEN={TOKEN}",
        "--profile", str(seconds),
        "--profile-rate", str(rate),
        "--no-direct",
    ]
    if stream:
        args.append("--profile-stream")
    say("load: " + " ".join(args[1:]))
    subprocess.run(args, check=True, cwd=ROOT)


# Grafana's `$__rate_interval` for a 1 s scrape and a 2 s step: four scrapes and a step.
RATE_INTERVAL = "5s"


def query_range(prom_port: int, expr: str, start: float, end: float) -> list:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 2})
    with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query_range?{params}", timeout=30) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise SystemExit(f"query failed: {expr}: {answer}")
    return answer["data"]["result"]


def legend(template: str, labels: dict) -> str:
    out = template
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out if template else json.dumps(labels)


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        if value >= 1:
            return f"{value:.2f} s"
        return f"{value * 1000:.2f} ms"
    if unit == "currencyUSD":
        return f"${value:.4f}"
    if unit in ("reqps", "ops"):
        return f"{value:.0f}/s"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def chart(panel: dict, series: list, start: float, end: float, width: int, height: int) -> str:
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    stacked = panel["fieldConfig"]["defaults"].get("custom", {}).get("stacking", {}).get("mode") == "normal"
    pad_l, pad_r, pad_t, pad_b = 70, 10, 10, 22
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    # Stack: cumulative sums per timestamp.
    drawn = []
    base: dict = {}
    for name, points in series:
        shown = []
        for t, v in points:
            below = base.get(t, 0.0) if stacked else 0.0
            shown.append((t, below + v, below))
            if stacked:
                base[t] = below + v
        drawn.append((name, shown))
    peak = max([v for _, pts in drawn for _, v, _ in pts] + [0.0])
    top = peak * 1.1 if peak > 0 else 1.0
    x = lambda t: pad_l + (t - start) / max(end - start, 1) * w
    y = lambda v: pad_t + h - v / top * h
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):
        v = top * i / 4
        yy = y(v)
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#2c3235"/>')
        parts.append(f'<text x="{pad_l - 6}" y="{yy + 4:.1f}" fill="#9fa7b3" font-size="11" text-anchor="end">{html.escape(fmt(v, unit))}</text>')
    for i in range(5):
        t = start + (end - start) * i / 4
        parts.append(f'<text x="{x(t):.1f}" y="{height - 6}" fill="#9fa7b3" font-size="11" text-anchor="middle">{time.strftime("%H:%M:%S", time.localtime(t))}</text>')
    for i, (name, pts) in enumerate(drawn):
        if not pts:
            continue
        color = COLORS[i % len(COLORS)]
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v, _ in pts)
        if stacked:
            lower = " ".join(f"{x(t):.1f},{y(b):.1f}" for t, _, b in reversed(pts))
            parts.append(f'<polygon points="{line} {lower}" fill="{color}" fill-opacity="0.25" stroke="none"/>')
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def render(prom_port: int, start: float, end: float) -> str:
    dashboard = json.loads(DASHBOARD.read_text())
    col, row = 60, 34
    cells = []
    bottom = 0
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        width, height = pos["w"] * col - 8, pos["h"] * row - 8
        series = []
        for target in panel["targets"]:
            for result in query_range(prom_port, target["expr"], start, end):
                points = [(float(t), float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
                series.append((legend(target.get("legendFormat", ""), result["metric"]), points))
        legend_html = "".join(
            f'<span class="key"><i style="background:{COLORS[i % len(COLORS)]}"></i>{html.escape(name)}</span>'
            for i, (name, _) in enumerate(series)
        ) or '<span class="key">no data</span>'
        svg = chart(panel, series, start, end, width - 16, height - 62)
        cells.append(
            f'<div class="panel" style="left:{pos["x"] * col}px;top:{pos["y"] * row}px;width:{width}px;height:{height}px">'
            f'<div class="title">{html.escape(panel["title"])}</div>{svg}<div class="legend">{legend_html}</div></div>'
        )
        bottom = max(bottom, (pos["y"] + pos["h"]) * row)
    span = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)) + " to " + time.strftime("%H:%M:%S", time.localtime(end))
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; background: #111217; font-family: Inter, Helvetica, Arial, sans-serif; color: #ccccdc; }}
header {{ padding: 12px 16px; font-size: 18px; }} header small {{ color: #9fa7b3; font-size: 12px; margin-left: 12px; }}
.grid {{ position: relative; margin: 0 8px; width: {24 * col}px; height: {bottom}px; }}
.panel {{ position: absolute; background: #181b1f; border: 1px solid #2c3235; border-radius: 3px; padding: 8px; box-sizing: border-box; }}
.title {{ font-size: 13px; font-weight: 500; margin-bottom: 4px; }}
.legend {{ font-size: 11px; margin-top: 2px; white-space: nowrap; overflow: hidden; }}
.key {{ margin-right: 12px; }} .key i {{ display: inline-block; width: 12px; height: 3px; margin-right: 4px; vertical-align: middle; }}
</style></head><body><header>{html.escape(dashboard["title"])}<small>{html.escape(span)} · Prometheus scraping serve every 1 s during gateway-bench (plain, then streamed requests)</small></header>
<div class="grid">{"".join(cells)}</div></body></html>"""


def screenshot(page_html: str) -> None:
    from playwright.sync_api import sync_playwright

    OUT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as f:
        f.write(page_html)
        path = f.name
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 24 * 60 + 16, "height": 900})
        page.goto("file://" + path)
        page.screenshot(path=str(OUT), full_page=True)
        browser.close()
    os.unlink(path)


def main() -> None:
    """`--render-only`: draw the last run again (after a change to the dashboard file)."""
    WORK.mkdir(parents=True, exist_ok=True)
    render_only = "--render-only" in sys.argv[1:]
    serve_port, prom_port = free_port(), free_port()
    prometheus = start_prometheus(serve_port, prom_port, fresh=not render_only)
    try:
        if render_only:
            window = json.loads((WORK / "window.json").read_text())
            start, end = window["start"], window["end"]
        else:
            start = time.time()
            bench(serve_port, 45, 300, stream=False)
            bench(serve_port, 30, 100, stream=True)
            time.sleep(3)
            end = time.time()
            (WORK / "window.json").write_text(json.dumps({"start": start, "end": end}))
        page = render(prom_port, start, end)
        (WORK / "dashboard.html").write_text(page)
        screenshot(page)
        say(f"wrote {OUT.relative_to(ROOT)}")
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)


if __name__ == "__main__":
    main()
