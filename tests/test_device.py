"""Device, precision, the forward pass every caller shares, and parsing labels."""

from __future__ import annotations

import pytest
import torch

from leukoscreen.model.device import (
    model_input,
    parsing_labels,
    resolve_device,
    resolve_precision,
    run_network,
)
from leukoscreen.model.errors import UsageError
from leukoscreen.model.networks import build_network


def test_resolve_device_and_precision() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("auto", cpu) in ("bf16", "fp32")
    with pytest.raises(UsageError, match="device: expected auto, cpu or cuda, got 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(UsageError, match="precision: expected auto, bf16 or fp32, got 'fp8'"):
        resolve_precision("fp8", cpu)


def test_parsing_labels_maps_nucleus_cytoplasm_background_to_2_1_0() -> None:
    # (3, 1, 3): pixel 0 is nucleus, pixel 1 cytoplasm, pixel 2 background.
    scores = torch.tensor([[[5.0, 0.0, -1.0]], [[1.0, 2.0, -2.0]], [[0.0, 1.0, 3.0]]])
    assert parsing_labels(scores).tolist() == [[2, 1, 0]]
    batch = torch.stack([scores, scores.flip(-1)])  # (2, 3, 1, 3)
    labels = parsing_labels(batch)
    assert labels.dtype == torch.uint8
    assert labels.tolist() == [[[2, 1, 0]], [[0, 1, 2]]]


def test_run_network_fp32_equals_a_plain_forward() -> None:
    torch.manual_seed(0)
    model = build_network("gp", scale=4, num_features=4, num_blocks=1, unet_widths=(4, 8)).eval()
    batch = {"up": torch.rand(2, 1, 16, 16)}
    x = model_input(model, batch)
    with torch.no_grad():
        sr, logits = run_network(model, x, device=torch.device("cpu"), precision="fp32")
        expected_sr, expected_logits = model(x)
    assert sr.shape == (2, 1, 16, 16)
    assert logits is not None and expected_logits is not None
    assert logits.shape == (2, 3, 16, 16)
    torch.testing.assert_close(sr, expected_sr)
    torch.testing.assert_close(logits, expected_logits)
