"""A torch ``Dataset`` over leukoscreen stores, for classifiers of the super-resolved cells.

:class:`CellDataset` indexes the cells of one or several complete stores as one sequence (store
by store, in cell-id order). Each store's Zarr arrays are opened lazily, in the process that
first reads an item, and never pickled: a ``DataLoader`` with worker processes gets a dataset
of paths and tables, and each worker opens its own readers, under both the ``fork`` and the
``spawn`` start methods (``tests/test_store.py``). :func:`~leukoscreen.pipeline.store.open_cells`
stays the lazy dask view of one store.

Kept apart from :mod:`leukoscreen.pipeline.store` so that the run's driver process, which only
writes stores, never imports torch.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from leukoscreen.pipeline.store import open_cells, read_attrs, read_table


class StoreCells:
    """The cells of one complete store, one item per cell, read chunk by chunk.

    Items are dicts of tensors:

    - ``sr``: (3, H, W) uint8, the super-resolved cell (RGB, channels first).
    - ``parsing``: (H, W) uint8 labels (0 background, 1 cytoplasm, 2 nucleus); only when the
      store has parsing maps.
    - ``lr``: (3, h, w) uint8, the crop the network saw (context margin included).
    - ``cell_id``: () int64, and every other table column as a tensor (``row``, ``col``,
      ``row_um``, ``col_um``, ``bbox`` (4,), ``area_um2``, ``score``, ``batch``).

    A cell is read with the rest of its chunk (``batch_size`` cells); the last chunk read is kept,
    so iterating in order decompresses each chunk once. The Zarr arrays are opened lazily in each
    DataLoader worker process (the dataset pickles by path); readers inherited through ``fork``
    are dropped and reopened, as the process id they were opened in no longer matches.

    Args:
        path: a store written by ``leukoscreen run`` with status ``complete``.

    Raises:
        OutputError: not a leukoscreen store, or not complete.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        open_cells(self.path)  # validates: a complete leukoscreen store
        self.table = read_table(self.path)
        self.attrs = read_attrs(self.path)
        self._arrays: dict[str, zarr.Array] | None = None
        self._pid: int | None = None  # the process that opened ``_arrays``
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.table["cell_id"])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        state["_pid"] = None
        state["_cached"] = None
        return state

    def _open(self) -> dict[str, zarr.Array]:
        if self._arrays is None or self._pid != os.getpid():  # not opened, or opened before a fork
            root = zarr.open_group(self.path, mode="r")
            self._arrays = {}
            self._pid = os.getpid()
            self._cached = None
            for name in ("sr", "parsing", "lr"):
                node = root.get(f"cells/{name}")
                if isinstance(node, zarr.Array):
                    self._arrays[name] = node
        return self._arrays

    def _chunk(self, chunk_index: int, chunk_len: int) -> dict[str, np.ndarray]:
        if self._cached is None or self._cached[0] != chunk_index:
            start = chunk_index * chunk_len
            stop = start + chunk_len
            block = {name: np.asarray(a[start:stop]) for name, a in self._open().items()}
            self._cached = (chunk_index, block)
        return self._cached[1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"cell index {index} out of range for {n} cells")
        index %= n
        chunk_len = self._open()["sr"].chunks[0]
        block = self._chunk(index // chunk_len, chunk_len)
        offset = index % chunk_len
        item: dict[str, Any] = {
            "sr": torch.from_numpy(np.ascontiguousarray(block["sr"][offset].transpose(2, 0, 1))),
            "lr": torch.from_numpy(np.ascontiguousarray(block["lr"][offset].transpose(2, 0, 1))),
        }
        if "parsing" in block:
            item["parsing"] = torch.from_numpy(np.ascontiguousarray(block["parsing"][offset]))
        for name, column in self.table.items():
            item[name] = torch.as_tensor(column[index])
        return item


Transform = Callable[[dict[str, Any]], dict[str, Any]]


class CellDataset(Dataset[dict[str, Any]]):
    """The cells of one or several complete stores as one indexed sequence.

    Item ``i`` is the cell of :class:`StoreCells` (tensors: ``sr``, ``parsing`` when the store
    has parsing maps, ``lr``, ``cell_id`` and every table column) plus ``slide`` (the slide's
    file name, a string) and ``store`` (the store's index in ``paths``, an int64 tensor), passed
    through ``transform`` when one is given. The default ``DataLoader`` collation turns
    ``slide`` into a list of strings.

    Args:
        paths: one store, or a sequence of stores (indexed in this order).
        transform: a function of the item dict returning the item dict (picklable, e.g. a
            module-level function, for ``spawn`` workers).

    Raises:
        OutputError: a path is not a leukoscreen store, or not complete.
    """

    def __init__(
        self, paths: Path | str | Sequence[Path | str], *, transform: Transform | None = None
    ) -> None:
        many = [paths] if isinstance(paths, str | Path) else list(paths)
        self.stores = [StoreCells(p) for p in many]
        self.transform = transform
        self._ends = np.cumsum([len(s) for s in self.stores]).tolist()
        self._slides = [Path(s.attrs["slide"]["path"]).name for s in self.stores]

    @property
    def path(self) -> Path:
        """The first store (the one store of a single-store dataset)."""
        return self.stores[0].path

    @property
    def table(self) -> dict[str, np.ndarray]:
        """The first store's table (the table of a single-store dataset)."""
        return self.stores[0].table

    @property
    def attrs(self) -> dict[str, Any]:
        """The first store's attributes."""
        return self.stores[0].attrs

    def __len__(self) -> int:
        return int(self._ends[-1]) if self._ends else 0

    def locate(self, index: int) -> tuple[int, int]:
        """``(store index, cell index in that store)`` of item ``index`` (negative counts back).

        Raises:
            IndexError: out of range.
        """
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"cell index {index} out of range for {n} cells")
        index %= n
        store = bisect.bisect_right(self._ends, index)
        start = self._ends[store - 1] if store else 0
        return store, index - start

    def __getitem__(self, index: int) -> dict[str, Any]:
        store, local = self.locate(index)
        item = self.stores[store][local]
        item["slide"] = self._slides[store]
        item["store"] = torch.tensor(store, dtype=torch.int64)
        return self.transform(item) if self.transform is not None else item
