"""Frozen configuration of the model side: training and inference choices.

These dataclasses are sections of the whole config tree (``leukoscreen.pipeline.config``); they
live here so that ``leukoscreen.model`` can use them without importing the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, get_args

from leukoscreen.model.errors import UsageError

Arch = Literal["gp", "np", "srcnn", "vdsr", "srresnet", "gpsft", "srgan", "sftgan"]
"""A trainable network."""
InferenceArch = Literal[
    "default", "bicubic", "gp", "np", "srcnn", "vdsr", "srresnet", "gpsft", "srgan", "sftgan"
]
"""What inference can run: a network, ``default`` (:data:`DEFAULT_ARCH`) or plain bicubic."""
Scale = Literal[4, 8]
"""The super-resolution factors: the paper's x4 and x8, the only ones with shipped weights."""
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "bf16", "fp32"]
CompileMode = Literal["auto", "on", "off"]

ARCHS: tuple[str, ...] = get_args(Arch)
SCALES: tuple[int, ...] = get_args(Scale)
REFERENCE_SCALE = 8
"""The scale at which ``slide.expected_mpp`` is given; other scales expect ``mpp * scale / 8``."""
GAN_ARCHS = ("srgan", "sftgan")
"""Networks trained adversarially (``leukoscreen.model.gan_train``)."""
PRIOR_ARCHS = ("gp", "gpsft")
"""Networks that predict a parsing map besides the SR image."""
PARSING_ARCHS = (*PRIOR_ARCHS, "sftgan")
"""Networks whose output includes a parsing map: the prior networks, and SFTGAN, which passes
on the map of the GP-SFT it is conditioned on."""
DEFAULT_ARCH = "gpsft"
"""The network ``arch="default"`` names: what ``leukoscreen run`` and ``load_pretrained(scale=s)``
use. GP-SFT: above every other shipped network on every source measured, 9-22x faster than the
paper's GP; GP keeps the better parsing map on segmentation_WBC (``docs/model-card.md``)."""


def check_scale(scale: int, *, where: str = "scale") -> None:
    """Refuse a scale outside :data:`SCALES`, for arguments that do not come through the config.

    Raises:
        UsageError: ``f"{where}: expected one of 4, 8, got {scale!r}"``.
    """
    if scale not in SCALES:
        raise UsageError(f"{where}: expected one of {', '.join(map(str, SCALES))}, got {scale!r}")


def _check_at_least(config: object, minimum: int, names: tuple[str, ...]) -> None:
    """Raise ``ValueError("key: expected >= minimum, found value")`` for the first field below."""
    known = {f.name for f in fields(config)}  # type: ignore[arg-type]
    for name in names:
        value = getattr(config, name)
        if name in known and value < minimum:
            raise ValueError(f"{name}: expected >= {minimum}, found {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How ``leukoscreen train`` trains one network (paper §2.5 and §3.4).

    Attributes:
        arch: one of ``gp``, ``np``, ``srcnn``, ``vdsr``, ``srresnet``.
        scale: super-resolution factor, 4 or 8.
        epochs: passes over the training split (paper: 100).
        batch_size: images per optimiser step (paper: 8).
        lr: Adam learning rate at step 0 (paper: 1e-4).
        lr_halve_every_epochs: halve the learning rate every this many epochs (paper §3.4: 10);
            0 keeps it constant.
        prior_weight: lambda, the weight of the parsing BCE loss (paper: 1).
        charbonnier_eps: epsilon of the Charbonnier penalty (paper: 1e-3).
        hr_size_px: side of the square HR training image (paper: 224); 0 keeps each data set's own
            size group (see ``leukoscreen.model.data``).
        seed: seed of initialisation, shuffling and the split.
        precision: ``auto`` (bf16 autocast on CPU with AMX/AVX-512 bf16 and on CUDA), ``bf16`` or
            ``fp32``.
        num_threads: torch intra-op threads; 0 means all cores.
        augment: flip / rotate each training image by one of the 8 symmetries of the square,
            drawn per (seed, epoch, image); the paper does not say whether it augments.
        mask_repeat: show each training image that has a parsing mask this many times per
            epoch (each time with its own augmentation), so that the prior still gets enough
            steps when mask-less sources outnumber the masked ones.
        init: start from these weights instead of a fresh initialisation (fine-tuning):
            ``default``, a network name (its shipped weights at ``scale``) or a weights file;
            empty for a fresh network.
        colour_augment: recolour each training image in optical-density space (stain amount
            and hue, lamp tint, brightness; ``leukoscreen.model.data.colour_augment``) and
            degrade it again, so the network meets other labs' colours.
        phase_augment: cut each training image at a random offset below the scale to a side one
            scale smaller and degrade it again (``leukoscreen.model.phases``), so each epoch shows
            each cell at another phase of the LR grid. ``leukoscreen train --init`` turns it on.
        parsing_only: train only the parsing map's HR modules (a prior network's
            :data:`~leukoscreen.model.train.PARSING_MODULES`) from ``init``, on the images that
            have masks; the SR path is frozen, so the SR image stays exactly as initialised, and
            the best epoch is the one with the best validation mIoU.
        lab_split: a plain image folder (a lab's own cells, not one of the known data sets) is
            cut 90 % train / 10 % validation with no test part (:data:`~leukoscreen.model.data.
            LAB_SPLIT_FRACTIONS`): fine-tuning on a lab's 50 cells then learns from 45, not 35.
            Data sets with a fixed split keep it. ``leukoscreen train --init`` turns it on.
        adversarial_weight: SRGAN / SFTGAN: weight of the generator's adversarial loss (Ledig
            et al.: 1e-3).
        feature_weight: SRGAN / SFTGAN: weight of the content (feature) loss; 10, measured
            (``docs/model-card.md``: with 1 the adversarial term wins and PSNR collapses).
        pixel_epochs: SRGAN / SFTGAN: epochs at the start that train the generator on the
            pixel MSE alone (its pre-training), before the adversarial epochs.
    """

    arch: Arch = "gp"
    scale: Scale = 8
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-4
    lr_halve_every_epochs: int = 10
    prior_weight: float = 1.0
    charbonnier_eps: float = 1e-3
    hr_size_px: int = 0
    seed: int = 0
    precision: Precision = "auto"
    num_threads: int = 0
    augment: bool = False
    colour_augment: bool = False
    phase_augment: bool = False
    mask_repeat: int = 1
    init: str = ""
    parsing_only: bool = False
    lab_split: bool = False
    adversarial_weight: float = 1e-3
    feature_weight: float = 10.0
    pixel_epochs: int = 0

    def __post_init__(self) -> None:
        _check_at_least(self, 1, ("epochs", "batch_size", "mask_repeat"))
        _check_at_least(self, 0, ("pixel_epochs",))


@dataclass(frozen=True)
class InferenceConfig:
    """How cells are super-resolved in ``leukoscreen run`` and ``leukoscreen upscale``.

    Attributes:
        arch: network to use: ``default`` (:data:`DEFAULT_ARCH`), or a name; ``gp`` (the
            paper's geometry prior) and ``gpsft`` give parsing maps.
        scale: super-resolution factor, 4 or 8.
        hr_size_px: side of the square super-resolved cell image, in HR pixels (paper: 224).
        context_margin_px: LR pixels of context added on each side of a crop before SR and trimmed
            after it, so the network's zero padding does not touch the cell.
        batch_size: cells per SR task (and per Zarr chunk of the cell arrays).
        device: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``.
        precision: ``auto``, ``bf16`` or ``fp32``.
        checkpoint: path of a checkpoint to use instead of the shipped weights; empty for shipped.
        compile: ``torch.compile`` the network: ``off`` (the default), ``auto`` (on CUDA only;
            a CPU's compile takes minutes per shape) or ``on``. A compiled network gets every
            SR batch padded to ``batch_size`` cells, so it compiles once per worker. Off by
            default because it does not pay on one slide: on an H200 the default network ran
            7,339 cells/s eager and 10,024 compiled (batch 128), i.e. 0.15 s saved on 4,000
            cells against 12-15 s of compiling per worker (``docs/benchmarks.md``).
    """

    arch: InferenceArch = "default"
    scale: Scale = 8
    hr_size_px: int = 224
    context_margin_px: int = 4
    batch_size: int = 16
    device: Device = "auto"
    precision: Precision = "auto"
    checkpoint: str = ""
    compile: CompileMode = "off"

    def __post_init__(self) -> None:
        _check_at_least(self, 1, ("batch_size", "hr_size_px"))
        _check_at_least(self, 0, ("context_margin_px",))
        if self.hr_size_px % self.scale:
            raise ValueError(
                f"hr_size_px: expected a multiple of the scale {self.scale}, found "
                f"{self.hr_size_px}"
            )
