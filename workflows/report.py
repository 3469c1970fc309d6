"""What closes every batch: ``DIR/batch-summary.json`` and ``DIR/batch-report.html``.

Both describe the slides of the batch that just ended (its rows of the status table) and the
batch's wall time; the status table itself keeps the rows of every batch run into ``DIR``.
The page is one self-contained HTML file (no script, no external style), linking each store by
its path relative to ``DIR``.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leukoscreen.workflows.status import STATES, Row, atomic_write

SUMMARY_JSON = "batch-summary.json"
REPORT_HTML = "batch-report.html"
_PER_SLIDE = ("slide", "state", "attempts", "cells", "seconds", "store", "error_class", "message")


def summarize(rows: Sequence[Row], *, wall_s: float, started_at: str, exit_status: int) -> dict:
    """Counts by state, failures by reason, throughput and per-slide timings of one batch."""
    states = Counter(str(r["state"]) for r in rows)
    failures = Counter(str(r["error_class"] or "unknown") for r in rows if r["state"] == "failed")
    worked = [r for r in rows if r["state"] == "done"]
    cells = sum(int(r["cells"] or 0) for r in worked)
    return {
        "started_at": started_at,
        "ended_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": round(wall_s, 3),
        "exit_status": exit_status,
        "slides": len(rows),
        "by_state": {s: states.get(s, 0) for s in STATES},
        "failures_by_reason": dict(failures.most_common()),
        "cells_done": cells,
        "slides_per_hour": round(3600.0 * len(worked) / wall_s, 2) if wall_s > 0 else 0.0,
        "cells_per_s": round(cells / wall_s, 3) if wall_s > 0 else 0.0,
        "per_slide": [{k: r[k] for k in _PER_SLIDE} for r in rows],
    }


def write_reports(folder: Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    """Write the summary JSON and the HTML page atomically; returns their paths."""
    folder = Path(folder)
    json_path, html_path = folder / SUMMARY_JSON, folder / REPORT_HTML
    atomic_write(json_path, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    atomic_write(html_path, render_html(summary, folder).encode("utf-8"))
    return json_path, html_path


def render_html(summary: dict[str, Any], folder: Path) -> str:
    """The batch report page."""
    e = html.escape
    counts = "".join(
        f"<tr><td class=s-{s}>{s}</td><td>{n}</td></tr>" for s, n in summary["by_state"].items()
    )
    reasons = (
        "".join(
            f"<tr><td>{e(k)}</td><td>{n}</td></tr>"
            for k, n in summary["failures_by_reason"].items()
        )
        or "<tr><td colspan=2>none</td></tr>"
    )
    slides = []
    for r in summary["per_slide"]:
        store = r["store"] or ""
        link = e(os.path.relpath(store, folder)) if store else ""
        seconds = f"{r['seconds']:.1f}" if r["seconds"] is not None else ""
        reason = f"{r['error_class']}: {r['message']}" if r["error_class"] else (r["message"] or "")
        anchor = f'<a href="{link}">{link}</a>' if link else ""
        cells = r["cells"] if r["cells"] is not None else ""
        slides.append(
            f"<tr><td>{e(Path(r['slide']).name)}</td><td class=s-{r['state']}>{r['state']}</td>"
            f"<td>{r['attempts']}</td><td>{cells}</td><td>{seconds}</td><td>{anchor}</td>"
            f"<td>{e(reason)}</td></tr>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>leukoscreen batch report</title>
<style>
body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}} th{{background:#eee}}
.s-done{{color:#176317}} .s-failed{{color:#b00020;font-weight:bold}} .s-skipped{{color:#555}}
</style></head><body>
<h1>leukoscreen batch report</h1>
<p>Started {e(summary["started_at"])}, ended {e(summary["ended_at"])}: {summary["slides"]} slides
in {summary["wall_s"]:.1f} s, exit status {summary["exit_status"]}.
{summary["slides_per_hour"]:.1f} slides/hour, {summary["cells_per_s"]:.2f} cells/s
({summary["cells_done"]} cells super-resolved).</p>
<h2>Slides by state</h2><table><tr><th>state</th><th>slides</th></tr>{counts}</table>
<h2>Failures by reason</h2><table><tr><th>error</th><th>slides</th></tr>{reasons}</table>
<h2>Slides</h2><table><tr><th>slide</th><th>state</th><th>attempts</th><th>cells</th>
<th>seconds</th><th>store</th><th>reason</th></tr>
{"".join(slides)}
</table></body></html>
"""
