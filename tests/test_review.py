"""``leukoscreen review``: the page of a real store (the bundled 75-cell example), its errors, the
index over several stores, a synthetic 2,000-cell page's size, and the page in real Chromium.

The example store is made once per module by ``leukoscreen run`` on the bundled slide (10-40 s
on a busy 2-core machine). The browser tests skip when ``chromium`` / ``chromedriver`` are not
installed (Debian packages of those names).
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import zarr
from skimage.filters import gaussian
from skimage.measure import block_reduce

from leukoscreen.model.inference import load_upscaler
from leukoscreen.pipeline.cli import main
from leukoscreen.pipeline.review import (
    bicubic_baseline,
    default_page,
    encode_cells,
    overlay_rgba,
)
from leukoscreen.pipeline.review_page import (
    CSV_COLUMNS,
    FLAGS,
    ReviewPage,
    Thumbnail,
    render_page,
)
from leukoscreen.pipeline.store import ATTRS_KEY, read_table

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "pipeline" / "example" / "bccd_x8.svs"
N_EXAMPLE_CELLS = 75
MAX_PAGE_BYTES = 50_000_000


class _Cells(HTMLParser):
    """Each ``<article class="cell">``: its attributes and the classes of the images inside."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, Any]] = []
        self.hrefs: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "article" and named.get("class") == "cell":
            self.cells.append({"attrs": named, "images": {}})
        elif tag == "img" and self.cells:
            self.cells[-1]["images"][named.get("class")] = named.get("data-src") or ""
        elif tag == "a" and named.get("href"):
            self.hrefs.append(str(named["href"]))


def _parse(text: str) -> _Cells:
    parser = _Cells()
    parser.feed(text)
    return parser


def _set_attr(store: Path, **changes: Any) -> None:
    root = zarr.open_group(store, mode="r+")
    attrs = dict(root.attrs[ATTRS_KEY])  # type: ignore[arg-type]
    attrs.update(changes)
    root.attrs[ATTRS_KEY] = attrs


@pytest.fixture(scope="module")
def example_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("review") / "ex.leukoscreen.zarr"
    assert main(["run", str(EXAMPLE), "--scale", "8", "--out", str(store)]) == 0
    return store


@pytest.fixture(scope="module")
def example_page(example_store: Path) -> Path:
    page = example_store.parent / "ex.review.html"
    assert main(["review", str(example_store), "--out", str(page)]) == 0
    return page


# --- the page of the real store -----------------------------------------------------------------


def test_every_cell_has_its_sr_and_bicubic_images_and_overlay(example_page: Path) -> None:
    cells = _parse(example_page.read_text(encoding="utf-8")).cells
    assert len(cells) == N_EXAMPLE_CELLS
    for cell in cells:
        assert set(cell["images"]) == {"sr", "bicubic", "overlay"}  # gpsft has a parsing map
        for uri in cell["images"].values():
            assert uri.startswith("data:image/webp;base64,")
    first = iio.imread(_decode(cells[0]["images"]["bicubic"]))
    assert first.shape == (224, 224, 3)


def _decode(uri: str) -> bytes:
    import base64

    return base64.b64decode(uri.split(",", 1)[1])


def test_cell_values_equal_the_store_table(example_store: Path, example_page: Path) -> None:
    table = read_table(example_store)
    cells = _parse(example_page.read_text(encoding="utf-8")).cells
    names = {"row": "row_um", "col": "col_um", "area": "area_um2", "score": "score"}
    names["conf"] = "parsing_confidence"
    for i in (0, 17, N_EXAMPLE_CELLS - 1):
        attrs = cells[i]["attrs"]
        assert int(attrs["data-id"]) == table["cell_id"][i] == i
        for key, column in names.items():
            assert float(attrs[f"data-{key}"]) == pytest.approx(float(table[column][i]), rel=1e-8)


def test_page_has_the_controls_flag_export_and_slide_image(example_page: Path) -> None:
    text = example_page.read_text(encoding="utf-8")
    for control in ("score-min", "score-max", "area-min", "area-max", "conf-min", "conf-max"):
        assert f'id="{control}"' in text
    assert 'id="flag-filter"' in text and 'id="overlay"' in text and 'id="sort"' in text
    assert 'download="ex.flags.csv"' in text and "new Blob([csv()]" in text
    assert "IntersectionObserver" in text
    assert all(f'<option value="{flag}">' in text for flag in FLAGS)
    assert '<image href="data:image/webp;base64,' in text  # the slide was found
    assert text.count('<circle id="m-') == N_EXAMPLE_CELLS


def test_missing_slide_is_said_on_the_page(example_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "moved.leukoscreen.zarr"
    shutil.copytree(example_store, store)
    _set_attr(store, slide={**_attrs(store)["slide"], "path": str(tmp_path / "gone.svs")})
    assert main(["review", str(store)]) == 0
    text = default_page(store).read_text(encoding="utf-8")
    assert f"slide file {tmp_path / 'gone.svs'} not found: no image" in text
    assert "<image href=" not in text and len(_parse(text).cells) == N_EXAMPLE_CELLS


def _attrs(store: Path) -> dict[str, Any]:
    return dict(zarr.open_group(store, mode="r").attrs[ATTRS_KEY])  # type: ignore[arg-type]


def test_default_page_sits_beside_the_store(tmp_path: Path) -> None:
    assert default_page(tmp_path / "a.leukoscreen.zarr") == tmp_path / "a.review.html"
    assert default_page(tmp_path / "b.zarr") == tmp_path / "b.review.html"


def test_index_links_the_pages_of_two_stores(example_store: Path, tmp_path: Path) -> None:
    second = tmp_path / "second.leukoscreen.zarr"
    shutil.copytree(example_store, second)
    pages = tmp_path / "pages"
    assert main(["review", str(example_store), str(second), "--out", str(pages)]) == 0
    hrefs = _parse((pages / "index.html").read_text(encoding="utf-8")).hrefs
    assert hrefs == ["ex.review.html", "second.review.html"]
    for href in hrefs:
        assert len(_parse((pages / href).read_text(encoding="utf-8")).cells) == N_EXAMPLE_CELLS


# --- bad input: one line, exit 2 ----------------------------------------------------------------


def test_incomplete_store_is_refused(
    example_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "cut.leukoscreen.zarr"
    shutil.copytree(example_store, store)
    _set_attr(store, status="running")
    assert main(["review", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{store}: store status is 'running', expected 'complete'" in err
    assert not default_page(store).exists()


def test_store_missing_an_array_is_refused(
    example_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "holed.leukoscreen.zarr"
    shutil.copytree(example_store, store)
    shutil.rmtree(store / "cells" / "lr")
    assert main(["review", str(store)]) == 2
    assert f"{store}: incomplete store, a cell array is missing" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "nothing.zarr", "{path}: no such store"),
        (lambda tmp: tmp, "{path}: not a leukoscreen store (no zarr.json with 'leukoscreen')"),
    ],
    ids=["missing", "not-a-store"],
)
def test_not_a_store_is_refused(
    make: Any, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make(tmp_path)
    assert main(["review", str(path)]) == 2
    assert f"leukoscreen: error: {message.format(path=path)}\n" == capsys.readouterr().err


def test_unwritable_output_is_refused(
    example_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "page.html"  # its folder is a file: nobody can write there, root included
    assert main(["review", str(example_store), "--out", str(out)]) == 2
    assert f"{blocker}: output folder does not exist or is not a folder" in capsys.readouterr().err


def test_several_stores_need_an_output_folder_and_distinct_names(
    example_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "one.html"
    out.write_text("")
    assert main(["review", str(example_store), str(example_store), "--out", str(out)]) == 2
    assert f"{out}: expected a folder for the review pages" in capsys.readouterr().err
    assert main(["review", str(example_store), str(example_store), "--out", str(tmp_path)]) == 2
    assert "would also hold" in capsys.readouterr().err


# --- images -------------------------------------------------------------------------------------


def test_bicubic_equals_the_inference_bicubic_on_the_lr_core(example_store: Path) -> None:
    lr = np.asarray(zarr.open_array(example_store / "cells" / "lr", mode="r")[:4])
    ours = bicubic_baseline(lr, scale=8, margin_px=4)
    theirs, _ = load_upscaler("bicubic", 8, device="cpu").upscale(lr[:, 4:-4, 4:-4])
    assert ours.shape == theirs.shape == (4, 224, 224, 3)
    # YCbCr is an affine map of RGB and the resize is linear: equal up to rounding.
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_overlay_colours_labels_and_clears_the_background() -> None:
    labels = np.array([[0, 1], [2, 0]], np.uint8)
    expected = np.array(
        [[[0, 0, 0, 0], [255, 0, 0, 255]], [[0, 0, 255, 255], [0, 0, 0, 0]]], np.uint8
    )
    np.testing.assert_array_equal(overlay_rgba(labels), expected)


def test_mismatched_lr_crops_are_refused() -> None:
    sr = np.zeros((1, 224, 224, 3), np.uint8)
    with pytest.raises(ValueError, match=r"bicubic of the LR core is \(1, 192, 192, 3\)"):
        encode_cells(sr, None, np.zeros((1, 32, 32, 3), np.uint8), scale=8, margin_px=4)


# --- a 2,000-cell page --------------------------------------------------------------------------

_BACKGROUND, _CYTOPLASM, _NUCLEUS = (236, 205, 208), (212, 190, 222), (92, 44, 134)


def _smooth_cells(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` synthetic x8 cells at the store's sizes: SR (n, 224, 224, 3), parsing (n, 224, 224),
    LR (n, 36, 36, 3) with a 4 px margin, the LR being the 8x8 block mean of the same scene.

    Each is a disc of cytoplasm around a 1-4-lobed nucleus with a smooth colour texture
    (Gaussian-filtered noise, sigma 4 HR px): random noise would not compress at all and real
    cells compress well, so pure noise would overstate the page and flat discs understate it.
    """
    rng = np.random.default_rng(seed)
    side = 36 * 8  # the HR scene under the LR crop, margin included
    rows, cols = np.mgrid[0:side, 0:side] - side / 2
    radius, angle = np.hypot(rows, cols), np.arctan2(rows, cols)
    palette = np.array([_BACKGROUND, _CYTOPLASM, _NUCLEUS], np.float64)
    sr, parsing, lr = [], [], []
    for _ in range(n):
        lobes = rng.integers(1, 5)
        nucleus = rng.uniform(30, 50) * (1 + 0.2 * np.cos(lobes * angle + rng.uniform(0, 6)))
        labels = np.where(radius < nucleus, 2, np.where(radius < rng.uniform(70, 100), 1, 0))
        texture = gaussian(rng.normal(size=(side, side, 3)), sigma=4, channel_axis=-1)
        scene = np.clip(palette[labels] + 90 * texture, 0, 255)  # (288, 288, 3)
        sr.append(scene[32:-32, 32:-32].astype(np.uint8))
        parsing.append(labels[32:-32, 32:-32].astype(np.uint8))
        lr.append(block_reduce(scene, (8, 8, 1), np.mean).astype(np.uint8))
    return np.stack(sr), np.stack(parsing), np.stack(lr)


def _synthetic_page(n_cells: int, n_distinct: int, *, with_parsing: bool = True) -> ReviewPage:
    """A ``n_cells`` page whose images cycle through ``n_distinct`` encoded synthetic cells;
    without parsing, as from a network without a parsing map (no overlay, no confidence)."""
    sr, parsing, lr = _smooth_cells(n_distinct)
    encoded = encode_cells(sr, parsing if with_parsing else None, lr, scale=8, margin_px=4)
    rng = np.random.default_rng(1)
    ids = np.arange(n_cells)
    table = {
        "cell_id": ids,
        "row": rng.uniform(0, 40_000, n_cells),
        "col": rng.uniform(0, 60_000, n_cells),
        "area_um2": rng.uniform(20, 150, n_cells),
        "score": rng.uniform(0, 1, n_cells).astype(np.float32),
        "parsing_confidence": rng.uniform(0.4, 1, n_cells).astype(np.float32),
    }
    table["row_um"], table["col_um"] = table["row"] * 0.5, table["col"] * 0.5
    if not with_parsing:
        del table["parsing_confidence"]
    thumbnail = Thumbnail((40_000, 60_000), (683, 1024), None, "synthetic: no slide")
    return ReviewPage(
        store="/data/synthetic.leukoscreen.zarr",
        run="2026-11-28T00:00:00+0000",
        facts={"cells": str(n_cells)},
        table=table,
        cells=[encoded[i % n_distinct] for i in ids],
        cell_size_px=224,
        thumbnail=thumbnail,
        csv_name="synthetic.flags.csv",
    )


def _image_bytes(text: str) -> float:
    """Mean characters of image data URIs per cell of a page."""
    cells = _parse(text).cells
    return sum(len(uri) for cell in cells for uri in cell["images"].values()) / len(cells)


def test_2000_cell_page_stays_under_50_mb(example_page: Path) -> None:
    """2,000 cells of smooth synthetic images (see :func:`_smooth_cells`), 100 of them encoded
    and each used 20 times: a page's size is the sum of its cells', so this is the size of 2,000
    distinct such cells (``-m slow`` runs all 2,000 distinct). The synthetic cells must cost at
    least as much page as the real example's, so the bound is not flattered by them."""
    text = render_page(_synthetic_page(2000, 100))
    assert len(_parse(text).cells) == 2000
    assert _image_bytes(text) >= _image_bytes(example_page.read_text(encoding="utf-8"))
    assert len(text.encode("utf-8")) < MAX_PAGE_BYTES


def test_encoding_in_chunks_gives_the_cells_of_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """``encode_cells`` makes the bicubic a few cells at a time (a 2,000-cell call took ~20 GB at
    once); the images must be the same as from one call over all cells."""
    sr, parsing, lr = _smooth_cells(5)
    whole = encode_cells(sr, parsing, lr, scale=8, margin_px=4)
    monkeypatch.setattr("leukoscreen.pipeline.review.ENCODE_CHUNK", 2)
    chunked = encode_cells(sr, parsing, lr, scale=8, margin_px=4)
    assert len(chunked) == 5
    assert chunked == whole
    assert len({cell.bicubic for cell in chunked}) == 5  # each cell its own bicubic, in order


def test_page_without_parsing_map_has_no_overlay_or_confidence() -> None:
    text = render_page(_synthetic_page(3, 3, with_parsing=False))
    cells = _parse(text).cells
    assert [set(cell["images"]) for cell in cells] == [{"sr", "bicubic"}] * 3
    assert all(cell["attrs"]["data-conf"] == "" for cell in cells)
    assert 'id="overlay"' not in text and 'id="conf-min"' not in text
    assert 'value="conf:1"' not in text  # no sorting by a column that is not there


@pytest.mark.slow
def test_2000_distinct_cells_page_size_and_load(tmp_path: Path, browser: Any) -> None:
    """The same with 2,000 distinct cells (about 1-2 min to encode), loaded in Chromium; prints
    the figures of ``docs/review.md``."""
    page = tmp_path / "synthetic.review.html"
    page.write_text(render_page(_synthetic_page(2000, 2000)), encoding="utf-8")
    size = page.stat().st_size
    load_ms = _load(browser, page)
    print(f"2000 distinct synthetic cells: {size / 1e6:.1f} MB, load {load_ms:.0f} ms")
    assert size < MAX_PAGE_BYTES
    assert browser.execute_script("return document.querySelectorAll('article.cell').length") == 2000


# --- in real Chromium ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through chromedriver (Debian's ``chromium`` and ``chromium-driver``)."""
    binary = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
    )
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("chromium or chromedriver not installed (apt-get install chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _load(driver: Any, page: Path) -> float:
    """Open ``page`` and return milliseconds from navigation start to the end of the load event."""
    driver.get(page.as_uri())
    return float(
        driver.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd")
    )


def _shown(driver: Any) -> int:
    return int(
        driver.execute_script(
            "return document.querySelectorAll('article.cell:not([hidden])').length"
        )
    )


def test_page_loads_fast_and_draws_the_cells(
    browser: Any, example_store: Path, example_page: Path
) -> None:
    load_ms = _load(browser, example_page)
    print(
        f"75-cell example page: {example_page.stat().st_size / 1e6:.2f} MB, load {load_ms:.0f} ms"
    )
    assert 0 < load_ms < 2000
    n_cells = len(read_table(example_store)["cell_id"])
    assert browser.execute_script("return document.querySelectorAll('article.cell').length") == (
        n_cells
    )
    time.sleep(0.3)  # let the first images in view decode
    shot = iio.imread(io.BytesIO(browser.get_screenshot_as_png()))
    assert shot.shape[0] > 500 and shot[..., :3].std() > 20  # not one flat colour
    assert len(np.unique(shot[..., :3].reshape(-1, 3), axis=0)) > 1000  # images, not just text
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []  # no JS error


def test_images_load_as_cells_scroll_into_view(browser: Any, example_page: Path) -> None:
    _load(browser, example_page)
    last = "document.querySelector('article.cell:last-of-type img.sr')"
    assert browser.execute_script(f"return {last}.hasAttribute('src')") is False
    browser.execute_script(f"{last}.scrollIntoView()")
    time.sleep(0.3)
    assert browser.execute_script(f"return {last}.src").startswith("data:image/webp")


def test_score_filter_overlay_toggle_and_flag_export(
    browser: Any, example_store: Path, example_page: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _load(browser, example_page)
    scores = np.sort(read_table(example_store)["score"].astype(np.float64))
    threshold = (scores[40] + scores[41]) / 2  # between two cells: 75 - 41 = 34 stay
    browser.find_element(By.ID, "score-min").send_keys(f"{threshold:.9f}")
    assert _shown(browser) == len(scores) - 41
    assert browser.find_element(By.ID, "n-shown").text == str(len(scores) - 41)
    browser.find_element(By.ID, "score-min").clear()
    browser.execute_script("leukoscreenReview.apply()")
    assert _shown(browser) == len(scores)

    overlay = "getComputedStyle(document.querySelector('img.overlay')).display"
    assert browser.execute_script(f"return {overlay}") != "none"
    browser.find_element(By.ID, "overlay").click()
    assert browser.execute_script(f"return {overlay}") == "none"

    Select(browser.find_element(By.CSS_SELECTOR, "#cell-3 select.flag")).select_by_value("artefact")
    lines = browser.execute_script("return leukoscreenReview.csv()").splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert len(lines) == 1 + len(scores)
    assert lines[4].startswith(f"{example_store},3,") and lines[4].endswith(",artefact")
    assert all(line.endswith(",none") for i, line in enumerate(lines[1:]) if i != 3)
    Select(browser.find_element(By.ID, "flag-filter")).select_by_value("artefact")
    assert _shown(browser) == 1
    _load(browser, example_page)  # the flag is kept in the browser across reloads
    assert (
        Select(
            browser.find_element(By.CSS_SELECTOR, "#cell-3 select.flag")
        ).first_selected_option.get_attribute("value")
        == "artefact"
    )


def test_page_without_parsing_map_works_in_the_browser(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    page = tmp_path / "plain.review.html"
    page.write_text(render_page(_synthetic_page(5, 5, with_parsing=False)), encoding="utf-8")
    _load(browser, page)
    assert _shown(browser) == 5
    browser.find_element(By.ID, "score-max").send_keys("-1")
    assert _shown(browser) == 0
    lines = browser.execute_script("return leukoscreenReview.csv()").splitlines()
    assert len(lines) == 6 and all(line.endswith(",,none") for line in lines[1:])
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
