"""Pictures of the dashboards for docs/operations.md, without Grafana (not installable here): a real ``harmony serve``
under the tests' short load (tests/harmony_load.py), scraped by a real Prometheus (tests/prometheus_server.py); each
panel's queries over the load's minutes (``/api/v1/query_range``) drawn as SVG lines in a Grafana-like grid, and the
page photographed by Chromium (tests/browser.py). Run from the repository root, not by the tests:

    .venv/bin/python deploy/dashboards/screenshots.py      # writes docs/images/dashboard-*.png
"""

from __future__ import annotations

import html
import re
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.browser import chromium_path, launch_args  # noqa: E402
from tests.dashboards import builder, concrete  # noqa: E402
from tests.harmony_load import short_load  # noqa: E402
from tests.harmony_process import HarmonyProcess  # noqa: E402
from tests.prometheus_server import PrometheusServer, harmony_scrape_configs  # noqa: E402

COLORS = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a")
WIDTH, HEIGHT = 560, 180


def series(server: PrometheusServer, expr: str, start: float, end: float) -> list[dict]:
    answer = httpx.get(server.url + "/api/v1/query_range", params={"query": concrete(expr, "20s"), "start": start,
                                                                   "end": end, "step": 2}, timeout=30).json()
    return answer["data"]["result"] if answer["status"] == "success" else []


def legend(template: str, labels: dict) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip() or "value"


def svg(lines: list[tuple[str, list[tuple[float, float]]]], start: float, end: float) -> str:
    values = [v for _, points in lines for _, v in points] or [0.0]
    top = max(max(values), 1e-9)
    paths = []
    for i, (_, points) in enumerate(lines):
        xy = " ".join(f"{(t - start) / (end - start) * WIDTH:.1f},{HEIGHT - v / top * (HEIGHT - 10):.1f}"
                      for t, v in points)
        paths.append(f'<polyline fill="none" stroke="{COLORS[i % len(COLORS)]}" stroke-width="1.5" points="{xy}"/>')
    return (f'<svg width="{WIDTH}" height="{HEIGHT}"><text x="2" y="12" fill="#999" font-size="10">'
            f'{top:.3g}</text><line x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}" stroke="#444"/>'
            + "".join(paths) + "</svg>")


def panel_html(server: PrometheusServer, panel: dict, start: float, end: float) -> str:
    lines = []
    for target in panel["targets"]:
        for result in series(server, target["expr"], start, end):
            points = [(float(t), float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
            lines.append((legend(target.get("legendFormat", ""), result["metric"]), points))
    keys = "".join(f'<span style="color:{COLORS[i % len(COLORS)]}">&#9632; {html.escape(name)}</span> '
                   for i, (name, _) in enumerate(lines[:8]))
    return (f'<div class="panel"><h3>{html.escape(panel["title"])}</h3>{svg(lines, start, end)}'
            f'<div class="keys">{keys}</div></div>')


def page(server: PrometheusServer, board: dict, start: float, end: float) -> str:
    panels = "".join(panel_html(server, p, start, end) for p in board["panels"])
    return ("<html><head><style>body{background:#111217;color:#ccc;font:12px sans-serif;margin:8px}"
            ".grid{display:flex;flex-wrap:wrap;gap:8px}.panel{background:#181b1f;border:1px solid #2c3235;"
            "padding:6px;width:570px}h3{margin:0 0 4px;font-size:13px;color:#ddd}.keys{font-size:10px}</style>"
            f"</head><body><h2>{html.escape(board['title'])}</h2><div class='grid'>{panels}</div></body></html>")


def photograph(pages: dict[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=launch_args())
        tab = browser.new_page(viewport={"width": 1220, "height": 800})
        for name, text in pages.items():
            tab.set_content(text)
            tab.screenshot(path=str(ROOT / "docs" / "images" / name), full_page=True)
        browser.close()


def main() -> int:
    harmony = HarmonyProcess().start()
    server = PrometheusServer(harmony_scrape_configs(harmony.url)).start()
    try:
        server.wait_for('up{job="harmony-services"} == 1')
        start = time.time()
        for _ in range(2):
            short_load(harmony.url)
        server.scraped_after(time.time() + 1)
        end = time.time()
        boards = builder().dashboards()
        photograph({f"dashboard-{name.removeprefix('harmony-').removesuffix('.json')}.png":
                    page(server, board, start - 10, end) for name, board in boards.items()})
    finally:
        server.stop()
        harmony.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
