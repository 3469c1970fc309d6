"""leukoscreen.model: the geometry-prior super-resolution network of Hua et al. (2020).

Networks, the MATLAB-compatible degradation, metrics, data sets, training, evaluation and the
shipped weights. This package never imports ``leukoscreen.pipeline``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("leukoscreen")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__"]
