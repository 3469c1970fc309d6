"""leukoscreen.pipeline: slide reading, leukocyte detection, crops, inference, Zarr store, CLI."""
