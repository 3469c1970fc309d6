"""The review page's HTML: pure rendering of one store's cells (data in, HTML text out).

:func:`render_page` writes one self-contained document: a sticky header with the store's facts
and the controls (sort, score / area / confidence ranges, flag filter, overlay toggle, CSV
export), the slide map (:class:`Thumbnail` as an SVG with a circle per cell, each a link to its
cell), and one ``<article class="cell">`` per cell holding its images, its table row and its
flag menu. The numbers the script sorts, filters and exports sit in the article's ``data-``
attributes (``id``, ``row``, ``col`` in µm, ``area`` in µm², ``score``, ``conf``), written with 9
significant digits. The inline script (:data:`PAGE_SCRIPT`) loads images lazily, filters, sorts,
keeps the flags in the browser's ``localStorage`` (per store path) and builds the flag CSV as a
Blob. :mod:`leukoscreen.pipeline.review` reads stores and encodes the images; ``docs/review.md``
documents the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

FLAGS = ("none", "check", "artefact")
"""The flag a reviewer sets on a cell (the ``flag`` column of the exported CSV)."""

SORT_OPTIONS = (
    ("id:1", "cell id"),
    ("score:-1", "score, highest first"),
    ("score:1", "score, lowest first"),
    ("area:-1", "area, largest first"),
    ("area:1", "area, smallest first"),
    ("conf:1", "confidence, most doubtful first"),
    ("conf:-1", "confidence, surest first"),
)
"""``<key>:<direction>`` of the sort menu; ``key`` names a ``data-`` attribute of the cells."""

CSV_COLUMNS = ("store", "cell_id", "row_um", "col_um", "area_um2", "score", "parsing_confidence",
               "flag")  # fmt: skip
"""Columns of the flag CSV, one row per cell in cell-id order (``docs/review.md``)."""

PAGE_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f4f4f2}
header{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #bbb;
 padding:.4em 1em}
h1{font-size:1.2em;margin:.2em 0}.facts{margin:.2em 0;color:#444;font-size:.9em}
form{display:flex;flex-wrap:wrap;gap:.4em 1.2em;align-items:center}
fieldset{border:0;margin:0;padding:0;display:inline}legend{float:left;margin-right:.3em}
input[type=number]{width:5.5em}#counter{font-weight:bold}
details.slide{padding:.4em 1em}.note{color:#a00;margin:.2em 0}
#slide-map{display:block;max-width:100%;max-height:45vh;width:auto;height:auto}
#slide-map .blank{fill:#ddd}
#slide-map circle{fill:none;stroke:#0a0;stroke-width:2}#slide-map circle.off{display:none}
#slide-map circle.flag-check{stroke:#e90;stroke-width:3}
#slide-map circle.flag-artefact{stroke:#c00;stroke-width:3}
#cells{display:flex;flex-wrap:wrap;gap:10px;padding:10px}
.cell{background:#fff;border:1px solid #bbb;border-radius:4px;padding:6px;
 content-visibility:auto;contain-intrinsic-size:auto 470px auto 360px}
.cell[hidden]{display:none}.cell:target{outline:3px solid #06c}
.cell{scroll-margin-top:9em}.cell.flag-check{box-shadow:0 0 0 3px #e90}
.cell.flag-artefact{box-shadow:0 0 0 3px #c00}
.pics{display:flex;gap:4px}figure{margin:0;position:relative}
figure img{display:block;background:#eee}
img.overlay{position:absolute;top:0;left:0;opacity:.35;pointer-events:none;background:none}
body.no-overlay img.overlay,.cell.bare img.overlay{display:none}img.sr[title]{cursor:pointer}
figcaption{font-size:12px;color:#555}
.cell table{font-size:12px;border-collapse:collapse;margin:4px 0}
th{text-align:left;font-weight:normal;color:#555;padding-right:.8em}
table.index{margin:1em;border-collapse:collapse}table.index td,table.index th{padding:.2em .8em}
"""

PAGE_SCRIPT = """
(() => {
  const $ = (id) => document.getElementById(id);
  const grid = $("cells");
  const cells = Array.from(grid.querySelectorAll("article.cell"));
  const key = "leukoscreen-review:" + document.body.dataset.store + "|" + document.body.dataset.run;
  let flags = {};
  try { flags = JSON.parse(localStorage.getItem(key) || "{}"); } catch (e) { flags = {}; }
  const num = (cell, name) => parseFloat(cell.dataset[name]);
  const select = (cell) => cell.querySelector("select.flag");
  const marker = (cell) => $("m-" + cell.dataset.id);

  // Images: data URIs wait in data-src until their cell comes within a screen of the view.
  const show = (cell) => cell.querySelectorAll("img[data-src]").forEach((img) => {
    img.src = img.dataset.src; img.removeAttribute("data-src"); });
  const observer = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
    entries.forEach((e) => {
      if (e.isIntersecting) { show(e.target); observer.unobserve(e.target); }
    });
  }, {rootMargin: "100% 0px"}) : null;
  cells.forEach((cell) => (observer ? observer.observe(cell) : show(cell)));

  const paint = (cell) => {
    const flag = select(cell).value;
    for (const el of [cell, marker(cell)]) {
      if (!el) continue;
      el.classList.remove("flag-check", "flag-artefact");
      if (flag !== "none") el.classList.add("flag-" + flag);
    }
  };
  const bounds = (name) => {
    if (!$(name + "-min")) return [-Infinity, Infinity];
    const lo = parseFloat($(name + "-min").value), hi = parseFloat($(name + "-max").value);
    return [isNaN(lo) ? -Infinity : lo, isNaN(hi) ? Infinity : hi];
  };
  const apply = () => {
    const limits = ["score", "area", "conf"].map((name) => [name, bounds(name)]);
    const wanted = $("flag-filter").value;
    let shown = 0;
    for (const cell of cells) {
      const ok = limits.every(([name, [lo, hi]]) =>
        (lo === -Infinity && hi === Infinity) || (num(cell, name) >= lo && num(cell, name) <= hi))
        && (wanted === "any" || select(cell).value === wanted);
      cell.hidden = !ok;
      if (marker(cell)) marker(cell).classList.toggle("off", !ok);
      shown += ok ? 1 : 0;
    }
    $("n-shown").textContent = shown;
  };
  const sort = () => {
    const [name, direction] = $("sort").value.split(":");
    const ordered = cells.slice().sort((a, b) =>
      direction * ((num(a, name) || 0) - (num(b, name) || 0)) || num(a, "id") - num(b, "id"));
    ordered.forEach((cell) => grid.appendChild(cell));
  };
  const quote = (text) => /[",\\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  const csv = () => {
    const store = quote(document.body.dataset.store);
    const rows = cells.slice().sort((a, b) => num(a, "id") - num(b, "id")).map((c) =>
      [store, c.dataset.id, c.dataset.row, c.dataset.col, c.dataset.area, c.dataset.score,
       c.dataset.conf, select(c).value].join(","));
    return [COLUMNS.join(","), ...rows].join("\\n") + "\\n";
  };

  cells.forEach((cell) => {
    select(cell).value = flags[cell.dataset.id] || "none";
    paint(cell);
    select(cell).addEventListener("change", () => {
      flags[cell.dataset.id] = select(cell).value;
      try { localStorage.setItem(key, JSON.stringify(flags)); } catch (e) { /* private mode */ }
      paint(cell); apply();
    });
  });
  for (const type of ["input", "change"]) {  // typing in a number box; a menu choice
    $("controls").addEventListener(type, (e) => {
      if (e.target.id === "sort") sort(); else if (e.target.id !== "overlay") apply();
    });
  }
  if ($("overlay")) $("overlay").addEventListener("change", () =>
    document.body.classList.toggle("no-overlay", !$("overlay").checked));
  grid.addEventListener("click", (e) => {  // a click on an SR image toggles that cell's overlay
    if (e.target.classList.contains("sr")) e.target.closest(".cell").classList.toggle("bare");
  });
  let url = null;
  $("export").addEventListener("click", () => {
    if (url) URL.revokeObjectURL(url);
    url = URL.createObjectURL(new Blob([csv()], {type: "text/csv"}));
    $("export").href = url;
  });
  // A reload may restore the controls' values (Firefox does): start from what they show.
  document.body.classList.toggle("no-overlay", !!$("overlay") && !$("overlay").checked);
  if ($("sort").value !== "id:1") sort();
  apply();
  window.leukoscreenReview = {csv, apply, sort, shown: () => cells.filter((c) => !c.hidden).length};
})();
"""


@dataclass(frozen=True)
class CellImages:
    """One cell's images, encoded once as data URIs.

    Attributes:
        sr: the super-resolved cell (WebP).
        bicubic: the bicubic upsampling of its LR core, same size (WebP).
        overlay: the parsing map coloured (cytoplasm red, nucleus blue) on a transparent
            background (lossless WebP), or ``None`` for a network without parsing map.
    """

    sr: str
    bicubic: str
    overlay: str | None


@dataclass(frozen=True)
class Thumbnail:
    """The slide drawn small, or the reason it is not.

    Attributes:
        slide_size_px: level-0 (height, width) of the slide (from the store).
        size_px: (height, width) of the drawing the cells are marked on.
        image: the thumbnail as a data URI, or ``None`` when the slide could not be read.
        note: why there is no image ('' when there is one).
    """

    slide_size_px: tuple[int, int]
    size_px: tuple[int, int]
    image: str | None
    note: str


@dataclass(frozen=True)
class ReviewPage:
    """Everything one store's page shows.

    Attributes:
        store: the store's absolute path, shown on the page and written in the flag CSV.
        run: what tells this run's store from a rerun's at the same path (its ``finished_at``):
            the flags kept in the browser belong to ``store`` and ``run`` together.
        facts: label -> value lines of the page header (slide, model, scale, ...).
        table: the store's cell table, column -> (N,) array (``open_cells(...).table``).
        cells: (N,) encoded images, in cell-id order.
        cell_size_px: side of the SR (and bicubic) images, pixels.
        thumbnail: the slide map.
        csv_name: file name offered for the flag CSV download.
    """

    store: str
    run: str
    facts: Mapping[str, str]
    table: Mapping[str, NDArray[Any]]
    cells: Sequence[CellImages]
    cell_size_px: int
    thumbnail: Thumbnail
    csv_name: str


def _number(value: float) -> str:
    return format(float(value), ".9g")


def _render_cell(i: int, table: Mapping[str, NDArray[Any]], images: CellImages, size: int) -> str:
    cell_id = int(table["cell_id"][i])
    conf = table.get("parsing_confidence")
    values = {
        "id": str(cell_id),
        "row": _number(table["row_um"][i]),
        "col": _number(table["col_um"][i]),
        "area": _number(table["area_um2"][i]),
        "score": _number(table["score"][i]),
        "conf": "" if conf is None else _number(conf[i]),
    }
    data = " ".join(f'data-{key}="{value}"' for key, value in values.items())
    img = f'width="{size}" height="{size}" decoding="async"'
    toggle = "" if images.overlay is None else ' title="click: parsing overlay on/off"'
    overlay = (
        ""
        if images.overlay is None
        else f'<img class="overlay" alt="" {img} data-src="{images.overlay}">'
    )
    rows = [
        ("cell", str(cell_id)),
        ("row, col", f"{table['row_um'][i]:.1f}, {table['col_um'][i]:.1f} µm"),
        ("area", f"{table['area_um2'][i]:.1f} µm²"),
        ("score", f"{table['score'][i]:.3f}"),
    ]
    if conf is not None:
        rows.append(("confidence", f"{conf[i]:.3f}"))
    cells = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    options = "".join(f'<option value="{flag}">{flag}</option>' for flag in FLAGS)
    return (
        f'<article class="cell" id="cell-{cell_id}" {data}><div class="pics">'
        f'<figure><img class="sr" alt="cell {cell_id} super-resolved"{toggle} {img} '
        f'data-src="{images.sr}">{overlay}<figcaption>super-resolved</figcaption></figure>'
        f'<figure><img class="bicubic" alt="cell {cell_id} bicubic" {img} '
        f'data-src="{images.bicubic}"><figcaption>bicubic</figcaption></figure></div>'
        f'<table>{cells}</table><label>flag <select class="flag">{options}</select></label>'
        "</article>\n"
    )


def _render_thumbnail(thumbnail: Thumbnail, table: Mapping[str, NDArray[Any]]) -> str:
    # SVG x spans the slide's pixel edges: level-0 pixel i (centred at i) covers [i, i + 1).
    height, width = thumbnail.size_px
    row_per_px = thumbnail.slide_size_px[0] / height
    col_per_px = thumbnail.slide_size_px[1] / width
    markers = "".join(
        f'<a href="#cell-{int(cell_id)}"><circle id="m-{int(cell_id)}" '
        f'cx="{(col + 0.5) / col_per_px:.1f}" cy="{(row + 0.5) / row_per_px:.1f}" r="6"/></a>'
        for cell_id, row, col in zip(table["cell_id"], table["row"], table["col"], strict=True)
    )
    image = (
        f'<image href="{thumbnail.image}" width="{width}" height="{height}"/>'
        if thumbnail.image
        else f'<rect class="blank" width="{width}" height="{height}"/>'
    )
    note = f'<p class="note">{html.escape(thumbnail.note)}</p>' if thumbnail.note else ""
    return (
        f'<details open class="slide"><summary>Slide, cells marked (click one to jump to it)'
        f"</summary>{note}"
        f'<svg id="slide-map" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        f"{image}{markers}</svg></details>\n"
    )


def _range_inputs(name: str, label: str, values: NDArray[Any]) -> str:
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    return (
        f"<fieldset><legend>{label}</legend>"
        f'<input type="number" step="any" id="{name}-min" placeholder="{low:.3g}" '
        f'title="lowest {label} shown"> to '
        f'<input type="number" step="any" id="{name}-max" placeholder="{high:.3g}" '
        f'title="highest {label} shown"></fieldset>'
    )


def _render_controls(table: Mapping[str, NDArray[Any]], csv_name: str, has_overlay: bool) -> str:
    has_conf = "parsing_confidence" in table
    sort = "".join(
        f'<option value="{value}">{label}</option>'
        for value, label in SORT_OPTIONS
        if has_conf or not value.startswith("conf")
    )
    ranges = _range_inputs("score", "score", table["score"])
    ranges += _range_inputs("area", "area µm²", table["area_um2"])
    if has_conf:
        ranges += _range_inputs("conf", "confidence", table["parsing_confidence"])
    flags = "".join(f'<option value="{flag}">{flag}</option>' for flag in ("any", *FLAGS))
    overlay = (
        '<label><input type="checkbox" id="overlay" checked> parsing overlay</label>'
        if has_overlay
        else ""
    )
    return (
        f'<form id="controls" onsubmit="return false"><label>sort <select id="sort">{sort}'
        f'</select></label>{ranges}<label>flag <select id="flag-filter">{flags}</select>'
        f"</label>{overlay}"
        f'<a id="export" href="#" download="{html.escape(csv_name)}">download flags (CSV)</a>'
        f' <span id="counter"><span id="n-shown">{len(table["cell_id"])}</span> of '
        f"{len(table['cell_id'])} cells shown</span></form>"
    )


def render_page(page: ReviewPage) -> str:
    """The review page of one store, as one HTML document (see the module docstring)."""
    n_cells = len(page.table["cell_id"])
    if len(page.cells) != n_cells:
        raise ValueError(f"{n_cells} table rows but {len(page.cells)} encoded cells")
    size, has_overlay = page.cell_size_px, any(c.overlay for c in page.cells)
    facts = " · ".join(f"{html.escape(k)}: <b>{html.escape(v)}</b>" for k, v in page.facts.items())
    body = "".join(_render_cell(i, page.table, page.cells[i], size) for i in range(n_cells))
    title = html.escape(f"leukoscreen review: {Path(page.store).name}")
    columns = json.dumps(list(CSV_COLUMNS))
    controls = _render_controls(page.table, page.csv_name, has_overlay)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width"><style>{PAGE_CSS}</style></head>\n'
        f'<body data-store="{html.escape(page.store)}" data-run="{html.escape(page.run)}">'
        f"<header><h1>{title}</h1>"
        f'<p class="facts">{facts}</p>{controls}</header>\n'
        f"{_render_thumbnail(page.thumbnail, page.table)}"
        f'<main id="cells">\n{body}</main>\n'
        f"<script>const COLUMNS = {columns};{PAGE_SCRIPT}</script></body></html>\n"
    )


def render_index(entries: Sequence[tuple[str, str, int]]) -> str:
    """The index over several review pages.

    Args:
        entries: ``(href, store, n_cells)`` per page; ``href`` relative to the index.
    """
    rows = "".join(
        f'<tr><td><a href="{html.escape(href)}">{html.escape(Path(store).name)}</a></td>'
        f"<td>{n_cells}</td><td>{html.escape(store)}</td></tr>\n"
        for href, store, n_cells in entries
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>leukoscreen review: {len(entries)} stores</title><style>{PAGE_CSS}</style>"
        f"</head>\n<body><header><h1>leukoscreen review: {len(entries)} stores</h1></header>\n"
        '<main><table class="index"><tr><th>page</th><th>cells</th><th>store</th></tr>\n'
        f"{rows}</table></main></body></html>\n"
    )
