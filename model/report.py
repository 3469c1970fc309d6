"""Reports of an evaluation: Table 2 as markdown, CSV and JSON, the Figs. 4-5 style figures, and
the model card's blocks.

:mod:`leukoscreen.model.evaluate` computes the scores (its ``Table``); this module only renders
them. ``tools/write_card.py`` copies the committed ``table2.md`` and the
training wall times into ``docs/model-card.md`` with :func:`write_card`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import skimage.io
import torch
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from leukoscreen.model.checkpoint import read_manifest
from leukoscreen.model.config import PRIOR_ARCHS
from leukoscreen.model.data import Sample, fit_to_size
from leukoscreen.model.errors import UsageError
from leukoscreen.model.evaluate import PARSING_KEYS, Table
from leukoscreen.model.imresize import degrade, rgb2ycbcr, ycbcr2rgb
from leukoscreen.model.inference import colour_parsing
from leukoscreen.model.networks import METHOD_NAMES

# ---------------------------------------------------------------------------------------------
# figure


PARSING_NAMES = {"gp": "GP", "gpsft": "GP-SFT"}
CSV_COLUMNS = (
    "scale", "method", "name", "source", "n_images", "psnr", "ssim", "texture", *PARSING_KEYS
)  # fmt: skip

PAPER_TABLE2: dict[int, dict[str, dict[str, float]]] = {
    4: {
        "bicubic": {"psnr": 36.6830, "ssim": 0.9714},
        "srcnn": {"psnr": 37.8846, "ssim": 0.9775},
        "vdsr": {"psnr": 36.6831, "ssim": 0.9714},
        "srresnet": {"psnr": 38.4418, "ssim": 0.9785},
        "srgan": {"psnr": 36.1347, "ssim": 0.9421},
        "sftgan": {"psnr": 35.9718, "ssim": 0.9238},
        "np": {"psnr": 39.5252, "ssim": 0.9832},
        "gp": {"psnr": 39.9251, "ssim": 0.9834},
    },
    8: {
        "bicubic": {"psnr": 31.1077, "ssim": 0.9239},
        "srcnn": {"psnr": 31.4251, "ssim": 0.9314},
        "vdsr": {"psnr": 31.1073, "ssim": 0.9241},
        "srresnet": {"psnr": 33.7853, "ssim": 0.9498},
        "srgan": {"psnr": 31.4918, "ssim": 0.9156},
        "sftgan": {"psnr": 31.3653, "ssim": 0.8566},
        "np": {"psnr": 34.4041, "ssim": 0.9565},
        "gp": {"psnr": 34.9352, "ssim": 0.9572},
    },
}
"""Hua et al. 2020, Table 2 (their private 52-image leukocyte set), for reference only."""

CARD_BEGIN, CARD_END = "<!-- table2:begin -->", "<!-- table2:end -->"
TIMES_BEGIN, TIMES_END = "<!-- walltime:begin -->", "<!-- walltime:end -->"


def _label_strip(
    names: Sequence[str], widths: Sequence[int], gap: int, height: int
) -> NDArray[np.uint8]:
    total = sum(widths) + gap * (len(widths) - 1)
    strip = Image.new("RGB", (total, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    left = 0
    for name, width in zip(names, widths, strict=True):
        draw.text((left + 2, 2), name, fill=(0, 0, 0), font=font)
        left += width + gap
    return np.asarray(strip, dtype=np.uint8)


def build_figure(
    samples: Sequence[Sample],
    sizes: Sequence[int],
    *,
    scale: int,
    panels: Mapping[str, Sequence[NDArray[np.float32]]],
    gp_labels: Sequence[NDArray[np.uint8] | None],
    gap_px: int = 4,
) -> NDArray[np.uint8]:
    """A figure like the paper's Figs. 4-5: one row per image, panels side by side.

    Columns: LR (nearest-neighbour enlarged), each method of ``panels`` (SR luminance with the
    bicubic Cb/Cr, as ``Upscaler.upscale`` does), HR, and where available GP's parsing map and
    the expert map (black background, red cytoplasm, blue nucleus). Each panel is the valid
    extent of the fitted HR image.

    Returns:
        (H, W, 3) uint8 RGB on white, with a header row naming the columns.
    """
    rows: list[NDArray[np.uint8]] = []
    names: list[str] = []
    for k, (sample, size) in enumerate(zip(samples, sizes, strict=True)):
        rgb, (rows_px, cols_px) = fit_to_size(sample.rgb, size)
        ycc = rgb2ycbcr(rgb.astype(np.float64) / 255.0)  # (H, W, 3)
        lr, up = degrade(ycc, scale)  # (H/s, W/s, 3), (H, W, 3)
        lr_near = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
        row = [("LR", _to_rgb(lr_near)[:rows_px, :cols_px])]
        for method, srs in panels.items():
            ycbcr = np.concatenate([srs[k][..., None], up[..., 1:]], axis=-1)
            row.append((METHOD_NAMES[method], _to_rgb(ycbcr)[:rows_px, :cols_px]))
        row.append(("HR", rgb[:rows_px, :cols_px]))
        predicted = gp_labels[k] if gp_labels else None
        if predicted is not None:
            row.append(("GP parsing", colour_parsing(predicted)[:rows_px, :cols_px]))
        if sample.labels is not None:
            expert, _ = fit_to_size(sample.labels, size)
            row.append(("expert", colour_parsing(expert)[:rows_px, :cols_px]))
        if len(row) > len(names):
            names = [name for name, _ in row]
        rows.append(_hstack([panel for _, panel in row], gap_px))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    panel_width = max(s for s in sizes)
    header = _label_strip(names, [panel_width] * len(names), gap_px, 14)
    header = np.pad(
        header[:, :width],
        ((0, 0), (0, max(0, width - header.shape[1])), (0, 0)),
        constant_values=255,
    )
    blocks = [header]
    for r in rows:
        blocks += [np.full((gap_px, width, 3), 255, np.uint8), r]
    return np.concatenate(blocks, axis=0)


def _to_rgb(ycbcr: NDArray[np.float64]) -> NDArray[np.uint8]:
    return np.clip(np.rint(ycbcr2rgb(ycbcr) * 255.0), 0, 255).astype(np.uint8)


def _hstack(panels: Sequence[NDArray[np.uint8]], gap_px: int) -> NDArray[np.uint8]:
    height = max(p.shape[0] for p in panels)
    width = max(p.shape[1] for p in panels)
    padded = [
        np.pad(p, ((0, height - p.shape[0]), (0, width - p.shape[1]), (0, 0)), constant_values=255)
        for p in panels
    ]
    gap = np.full((height, gap_px, 3), 255, np.uint8)
    out: list[NDArray[np.uint8]] = [padded[0]]
    for panel in padded[1:]:
        out += [gap, panel]
    return np.concatenate(out, axis=1)


# ---------------------------------------------------------------------------------------------
# output


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_markdown(table: Table) -> str:
    """Table 2 in the paper's layout, then parsing, proxies, per-source and the paper's values."""
    return "\n".join(
        [
            *_main_table(table),
            *_parsing_section(table),
            *_proxy_section(table),
            *_per_source_section(table),
            *_paper_section(table),
            "",
            f"Command: `{table.meta['command']}`",
            "",
        ]
    )


def table_csv(table: Table) -> str:
    """:data:`CSV_COLUMNS`, one line per ``Table.rows`` entry; empty cells where not scored."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in table.rows():
        writer.writerow({k: _csv_cell(row.get(k)) for k in CSV_COLUMNS})
    return buffer.getvalue()


def table_json(table: Table) -> dict[str, Any]:
    """Metadata, aggregated rows, parsing per scale, and the paper's Table 2."""
    parsing = []
    for scale in table.scales:
        for source in table.sources():
            means = table.parsing_mean(scale, source)
            if means:
                parsing.append({"scale": scale, "source": source, **means})
    return {
        **table.meta,
        "scales": list(table.scales),
        "methods": list(table.methods),
        "missing": list(table.missing),
        "weights": table.weights,
        "results": table.rows(),
        "parsing": parsing,
        "parsing_proxies": [
            {"scale": scale, "method": method, "source": source, **means}
            for scale in table.scales
            for method in table.methods
            for source in table.sources()
            if (means := table.proxy_mean(scale, method, source))
        ],
        "paper_table2": {str(k): v for k, v in PAPER_TABLE2.items()},
    }


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.6f}" if isinstance(value, float) else value


def _main_table(table: Table) -> list[str]:
    meta = table.meta
    n = meta["split_sizes"].get(meta["split"], meta["split_sizes"].get("all", {})).get("all", "?")
    names = [METHOD_NAMES[m] for m in table.methods]
    lines = [
        "## Table 2: SR benchmark (bicubic degradation)",
        "",
        f"{meta['data']}, split `{meta['split']}` ({n} images), seed {meta['seed']}; "
        f"Y channel, float32, shave = scale px on the valid extent; {meta['device']} "
        f"{meta['precision']}; {meta['date']}.",
        "",
        "| | | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for scale in table.scales:
        for k, metric in enumerate(("psnr", "ssim", "texture")):
            cells = [
                _fmt(table.value(scale, m, metric), 4 - (metric == "texture"))
                for m in table.methods
            ]
            label = f"{scale}×" if k == 0 else ""
            name = "texture" if metric == "texture" else metric.upper()
            lines.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
        if any(m in PRIOR_ARCHS for m in table.methods):
            cells = [
                _fmt(table.parsing_mean(scale, method=m).get("miou"), 4)
                if m in PRIOR_ARCHS
                else "–"
                for m in table.methods
            ]
            lines.append("|  | mIoU | " + " | ".join(cells) + " |")
    lines += [
        "",
        "texture: gradient energy of the SR luminance over the HR's inside the nucleus (expert "
        "mask, else the stain-derived one; `metrics.texture_ratio`): 1 is the HR's own texture, "
        "below 1 smoother, above 1 detail the HR does not have.",
    ]
    if table.missing:
        lines += ["", f"n/a: no weights yet for {', '.join(table.missing)}."]
    return lines


def _parsing_section(table: Table) -> list[str]:
    lines: list[str] = []
    for method in (m for m in table.methods if m in PRIOR_ARCHS):
        if not any(table.parsing_mean(s, method=method) for s in table.scales):
            continue
        lines += [
            "",
            f"### {PARSING_NAMES[method]} parsing map vs the expert masks",
            "",
            "| scale | source | images | mIoU | mDice | IoU nucleus | IoU cytoplasm | "
            "Dice nucleus | Dice cytoplasm |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for scale in table.scales:
            for source in table.sources():
                p = table.parsing_mean(scale, source, method)
                if p:
                    cells = [_fmt(p[k], 4) for k in PARSING_KEYS]
                    lines.append(
                        f"| {scale}× | {source} | {p['n_masks']} | " + " | ".join(cells) + " |"
                    )
    return lines


def _proxy_section(table: Table) -> list[str]:
    lines: list[str] = []
    proxy_methods = [m for m in table.methods if any(p.method == m for p in table.proxies)]
    if proxy_methods:
        lines += [
            "",
            "### Parsing maps without expert masks (proxies, `metrics.parsing_proxies`)",
            "",
            "Outer strip: share of the outer 16 px labelled cell; centre: share of cells whose "
            "nucleus covers >= 10 % of the central 64 x 64 px; stain IoU: predicted nucleus vs "
            "the stain-derived nucleus (`metrics.stain_nucleus_mask` of the run's version).",
            "",
            "| scale | method | source | images | outer strip cell | nucleus in centre | "
            "nucleus IoU (stain) |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for scale in table.scales:
            for method in proxy_methods:
                for source in table.sources():
                    q = table.proxy_mean(scale, method, source)
                    if q:
                        lines.append(
                            f"| {scale}× | {METHOD_NAMES[method]} | {source} | {q['n_images']} | "
                            f"{q['outer_strip_cell']:.3f} | {q['nucleus_in_centre']:.3f} | "
                            f"{q['nucleus_iou_stain']:.3f} |"
                        )
    return lines


def _per_source_section(table: Table) -> list[str]:
    lines: list[str] = []
    names = [METHOD_NAMES[m] for m in table.methods]
    if len(table.sources()) > 1:
        lines += [
            "",
            "### Per source (PSNR dB / SSIM)",
            "",
            "| scale | source | images | " + " | ".join(names) + " |",
            "|---|---|---:|" + "---:|" * len(names),
        ]
        for scale in table.scales:
            for source in table.sources()[1:]:
                count = sum(
                    1
                    for s in table.images
                    if s.scale == scale and s.source == source and s.method == table.methods[0]
                )
                cells = []
                for m in table.methods:
                    mean_psnr = table.value(scale, m, "psnr", source)
                    mean_ssim = table.value(scale, m, "ssim", source)
                    cells.append(
                        "n/a" if mean_psnr is None else f"{mean_psnr:.2f} / {_fmt(mean_ssim, 4)}"
                    )
                lines.append(f"| {scale}× | {source} | {count} | " + " | ".join(cells) + " |")
    return lines


def _paper_section(table: Table) -> list[str]:
    names = [METHOD_NAMES[m] for m in table.methods]
    lines = [
        "",
        "### The paper's Table 2 (their private 52-image set; for reference, not comparable)",
        "",
        "| | | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for scale in PAPER_TABLE2:
        for k, metric in enumerate(("psnr", "ssim")):
            cells = [
                f"{PAPER_TABLE2[scale][m][metric]:.4f}" if m in PAPER_TABLE2[scale] else "–"
                for m in table.methods
            ]
            label = f"{scale}×" if k == 0 else ""
            lines.append(f"| {label} | {metric.upper()} | " + " | ".join(cells) + " |")
    return lines


def write_results(table: Table, out: Path) -> list[Path]:
    """Write ``table2.md``, ``table2.csv``, ``table2.json`` and ``fig_x<s>.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("table2.md", table_markdown(table)),
        ("table2.csv", table_csv(table)),
        ("table2.json", json.dumps(table_json(table), indent=2) + "\n"),
    ):
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for scale, shown in table.figure_panels.items():
        figure = build_figure(
            shown.samples, shown.sizes, scale=scale, panels=shown.panels, gp_labels=shown.gp_labels
        )
        path = out / f"fig_x{scale}.png"
        skimage.io.imsave(path, figure, check_contrast=False)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# model card


def _histories(source: Path) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """(hardware, {run: history}) of a runs folder (``*/last.pt``) or a histories JSON file."""
    source = Path(source)
    if source.is_file():  # {"hardware": ..., "runs": {name: {"history": [...]}}}
        saved = json.loads(source.read_text(encoding="utf-8"))
        return str(saved.get("hardware", source.name)), {
            name: list(run["history"]) for name, run in saved["runs"].items()
        }
    found = {}
    for last in sorted(source.glob("*_x*/last.pt")):
        state = torch.load(last, map_location="cpu", weights_only=True)
        found[last.parent.name] = list(state.get("history", []))
    return f"CPU ({source})", found


def _shipped_epoch(history: list[dict[str, Any]], shipped: Mapping[str, Any]) -> int | None:
    """The epoch of ``history`` whose epoch and validation PSNR the shipped metrics record."""
    for record in history:
        if record["epoch"] == shipped.get("epoch") and math.isclose(
            record["val_psnr"], shipped.get("val_psnr", math.inf), abs_tol=1e-5
        ):
            return int(record["epoch"])
    return None


def training_times(*sources: Path) -> list[dict[str, Any]]:
    """Epochs, wall time, best validation scores of each run in ``sources``, and whether the
    shipped weights of ``<arch>_x<scale>`` came from it (same epoch and validation PSNR).

    Each source is a folder of ``<arch>_x<scale>/last.pt`` runs or a JSON file of histories
    (``docs/results/training_h200.json``).
    """
    manifest = read_manifest()
    found = []
    for source in sources:
        hardware, runs = _histories(source)
        for name, history in runs.items():
            shipped = manifest.get(name, {}).get("metrics", {})
            found.append(
                {
                    "run": name,
                    "hardware": hardware,
                    "epochs": len(history),
                    "seconds": float(sum(h["seconds"] for h in history)),
                    "best_val_psnr": max((h["val_psnr"] for h in history), default=float("nan")),
                    "best_val_miou": max(
                        (h["val_miou"] for h in history if "val_miou" in h), default=float("nan")
                    ),
                    "shipped_epoch": _shipped_epoch(history, shipped),
                }
            )
    return found


def _replace_block(text: str, begin: str, end: str, body: str) -> str:
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise UsageError(f"model card: markers {begin} ... {end} not found")
    return pattern.sub(lambda _: f"{begin}\n{body.strip()}\n{end}", text)


def _rows_without_run(text: str, written: set[tuple[str, ...]]) -> list[str]:
    """The card's wall-time rows whose (run, hardware) no source gave this time: a run folder
    that a new checkout lacks keeps its row rather than losing what it measured."""
    block = re.search(re.escape(TIMES_BEGIN) + r"(.*?)" + re.escape(TIMES_END), text, re.S)
    rows = block.group(1).strip().splitlines()[2:] if block else []
    return [
        row for row in rows if row.startswith("| ") and tuple(row.split(" | ")[:2]) not in written
    ]


def write_card(card: Path, results: Path, runs: Path | Sequence[Path]) -> None:
    """Copy ``results/table2.md`` and the training wall times of ``runs`` (one or more run
    folders or histories JSON files) into the model card's markers. Rows already in the card
    for runs that none of ``runs`` holds are kept, after the new ones."""
    table_md = (Path(results) / "table2.md").read_text(encoding="utf-8")
    table_md = re.sub(r"^(#+) ", r"#\1 ", table_md, flags=re.M)  # one level below the card's
    lines = [
        "| run | trained on | epochs | wall time | best val PSNR (dB) | best val mIoU | shipped |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    sources = [runs] if isinstance(runs, (str, Path)) else list(runs)
    for t in training_times(*map(Path, sources)):
        miou = "–" if np.isnan(t["best_val_miou"]) else f"{t['best_val_miou']:.3f}"
        shipped = "–" if t["shipped_epoch"] is None else f"epoch {t['shipped_epoch']}"
        lines.append(
            f"| {t['run']} | {t['hardware']} | {t['epochs']} | {t['seconds'] / 60:.1f} min | "
            f"{t['best_val_psnr']:.3f} | {miou} | {shipped} |"
        )
    text = Path(card).read_text(encoding="utf-8")
    lines += _rows_without_run(text, {tuple(line.split(" | ")[:2]) for line in lines[2:]})
    text = _replace_block(text, CARD_BEGIN, CARD_END, table_md)
    text = _replace_block(text, TIMES_BEGIN, TIMES_END, "\n".join(lines))
    Path(card).write_text(text, encoding="utf-8")
