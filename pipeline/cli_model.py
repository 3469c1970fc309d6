"""The model commands of the ``leukoscreen`` command line: ``train`` and ``evaluate``.

Registered on the one ``app`` by :func:`register`; their options are declared once below as
``Annotated`` types, so each command body stays the few lines of STYLE.md: parse, load the
config, override, call one function.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from leukoscreen.model.config import GAN_ARCHS, SCALES
from leukoscreen.model.errors import UsageError
from leukoscreen.pipeline.cli_options import ConfigOption
from leukoscreen.pipeline.config import load_config, override_flags

DEFAULT_TRAIN_DATA = Path("../shared/data/segmentation_WBC")
FINE_TUNE = {
    "epochs": 100,
    "lr": 1e-4,
    "lr_halve_every": 25,
    "augment": True,
    "phase_augment": True,
}
"""``leukoscreen train --init`` defaults (``docs/model-card.md``, fine-tuning)."""
PARSING_FINE_TUNE = {"epochs": 100, "lr": 1e-4, "lr_halve_every": 0}
"""``leukoscreen train --init --parsing-only`` defaults (the model card's parsing recipes give
their schedule and augmentation explicitly)."""

TrainArch = Annotated[
    str | None,
    typer.Option(
        help=(
            "Network: gp, np, srcnn, vdsr, srresnet, gpsft, srgan or sftgan (the GANs start "
            "from the shipped SRResNet, or from --init, and train adversarially). [default: "
            "train.arch of the config, gp]"
        ),
        show_default=False,
    ),
]
TrainScale = Annotated[
    int | None,
    typer.Option(
        help="Super-resolution factor: 4 or 8. [default: train.scale of the config, 8]",
        show_default=False,
    ),
]
TrainData = Annotated[
    list[Path] | None,
    typer.Option(
        help=(
            "A training source; repeat to mix several. segmentation_WBC root (with "
            "'Dataset 1' and 'Dataset 2'), a field set with leukocyte boxes (a folder named "
            "BCCD, DeepBioNet or draaslan: each boxed cell cropped at full resolution, no "
            "masks, in the source's fixed split), a folder of LabelMe JSON files, or a "
            "folder of HR images with optional <stem>.png / <stem>_mask.png masks (255 "
            "nucleus, 128 cytoplasm, 0 background). Images without masks train the SR loss "
            "only. [default: ../shared/data/segmentation_WBC]"
        ),
        show_default=False,
    ),
]
TrainOut = Annotated[
    Path | None,
    typer.Option(
        help="Run folder for last.pt and best.pt. [default: runs/<arch>_x<scale>]",
        show_default=False,
    ),
]
TrainEpochs = Annotated[
    int | None, typer.Option(help="Passes over the training split (paper: 100).")
]
TrainBatchSize = Annotated[int | None, typer.Option(help="Images per optimiser step (paper: 8).")]
TrainLr = Annotated[
    float | None,
    typer.Option(help="Adam learning rate at the start, halved every 10 epochs (paper: 1e-4)."),
]
TrainSeed = Annotated[
    int | None, typer.Option(help="Seed of initialisation, shuffling and the split.")
]
TrainAugment = Annotated[
    bool | None,
    typer.Option(
        "--augment/--no-augment",
        help="Flip / rotate each training image by one of the 8 symmetries of the square.",
        show_default=False,
    ),
]
TrainColourAugment = Annotated[
    bool | None,
    typer.Option(
        "--colour-augment/--no-colour-augment",
        help="Recolour each training image in optical-density space (stain amount and hue, "
        "lamp tint, brightness) and degrade it again, for other labs' colours.",
        show_default=False,
    ),
]
TrainPhaseAugment = Annotated[
    bool | None,
    typer.Option(
        "--phase-augment/--no-phase-augment",
        help="Cut each training image at a random offset below the scale and degrade it again, "
        "so each epoch shows each cell at another phase of the LR grid (on with --init).",
        show_default=False,
    ),
]
TrainMaskRepeat = Annotated[
    int | None,
    typer.Option(
        help="Show each image that has a parsing mask this many times per epoch (when "
        "mask-less sources outnumber the masked ones). [default: 1]",
        show_default=False,
    ),
]
TrainLrHalveEvery = Annotated[
    int | None,
    typer.Option(help="Halve the learning rate every this many epochs (paper: 10; 0: never)."),
]
TrainInit = Annotated[
    str | None,
    typer.Option(
        help="Fine-tune instead of training from scratch: start from 'default' (the shipped "
        "default network), a network name (its shipped weights) or a weights file. The arch "
        "follows the weights. Masks are optional: without any, a prior network's parsing "
        "part is kept as shipped and only the SR part adapts. Unless given, fine-tuning "
        f"uses --epochs {FINE_TUNE['epochs']}, --lr {FINE_TUNE['lr']:g}, --lr-halve-every "
        f"{FINE_TUNE['lr_halve_every']}, --augment and --phase-augment, and "
        "(without --parsing-only) cuts a plain image folder 90 % train / 10 % validation "
        "(train.lab_split; known data sets keep their splits).",
        show_default=False,
    ),
]
TrainParsingOnly = Annotated[
    bool,
    typer.Option(
        "--parsing-only",
        help="With --init on GP-SFT weights: train only the parsing map's HR modules on the "
        "images with masks; the SR image stays exactly as in the --init weights and best.pt "
        "is the epoch with the best validation mIoU.",
    ),
]
TrainPixelEpochs = Annotated[
    int | None,
    typer.Option(
        help="srgan / sftgan: epochs at the start that train the generator on the pixel MSE "
        "alone (its pre-training) before the adversarial ones. [default: 0]",
        show_default=False,
    ),
]
TrainAdversarialWeight = Annotated[
    float | None,
    typer.Option(
        help="srgan / sftgan: weight of the adversarial loss against the content loss "
        "(Ledig et al.: 1e-3).",
        show_default=False,
    ),
]
TrainDevice = Annotated[str, typer.Option(help="auto (CUDA when present, else CPU), cpu or cuda.")]
TrainResume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run in --out from its last.pt (same config; --epochs may grow).",
    ),
]
EvaluateScale = Annotated[
    list[int] | None,
    typer.Option(
        "--scale", metavar="N", help="SR factor to evaluate, 4 or 8; repeat for both (default)."
    ),
]
EvaluateData = Annotated[
    Path,
    typer.Option(
        help="segmentation_WBC root or a field set with leukocyte boxes (BCCD, DeepBioNet, "
        "draaslan: its boxed cells cropped; the test part of the source's fixed split is "
        "evaluated), or any folder of HR images with optional <stem>_mask.png masks (all of "
        "its images are evaluated)."
    ),
]
EvaluateMethod = Annotated[
    list[str] | None,
    typer.Option(
        "--method",
        metavar="NAME",
        help="Method to run: bicubic, srcnn, vdsr, srresnet, srgan, sftgan, np, gp or gpsft; "
        "repeatable. "
        "Default: all, reporting those without shipped weights as n/a.",
    ),
]
EvaluateCheckpoint = Annotated[
    list[str] | None,
    typer.Option(
        "--checkpoint",
        metavar="NAME=PATH",
        help="Weights to use instead of the shipped ones, as <method>_x<scale>=PATH "
        "(e.g. gp_x8=runs/gp_x8/best.pt); repeatable.",
    ),
]
EvaluateSplit = Annotated[
    str, typer.Option(help="Part of the segmentation_WBC split: train, val or test.")
]
EvaluateOut = Annotated[
    Path,
    typer.Option(help="Folder for table2.md/.csv/.json and fig_x4.png/fig_x8.png."),
]
EvaluateDevice = Annotated[
    str | None,
    typer.Option(help="Where the networks run: auto, cpu or cuda (config: inference.device)."),
]
EvaluatePrecision = Annotated[
    str,
    typer.Option(help="fp32 (reproducible, the paper's float32) or bf16/auto (faster)."),
]
EvaluateFigures = Annotated[
    bool, typer.Option("--figures/--no-figures", help="Also write the Figs. 4-5 style PNGs.")
]


def with_fine_tune_defaults(
    flags: dict[str, tuple[str, Any]], *, parsing_only: bool
) -> dict[str, tuple[str, Any]]:
    """``train_cmd``'s flags for a fine-tuning run (``--init``): each :data:`FINE_TUNE` setting
    (:data:`PARSING_FINE_TUNE` with ``--parsing-only``) the user did not give takes its
    fine-tuning default, and a plain image folder is cut 90 / 10 (``train.lab_split``) unless
    only the parsing map trains."""
    out = dict(flags)
    for key, value in (PARSING_FINE_TUNE if parsing_only else FINE_TUNE).items():
        flag = "--" + key.replace("_", "-")
        setting, given = out[flag]
        out[flag] = (setting, value if given is None else given)
    out["--init (a lab's folder)"] = ("train.lab_split", None if parsing_only else True)
    return out


def train_cmd(
    arch: TrainArch = None,
    scale: TrainScale = None,
    data: TrainData = None,
    out: TrainOut = None,
    epochs: TrainEpochs = None,
    batch_size: TrainBatchSize = None,
    lr: TrainLr = None,
    seed: TrainSeed = None,
    augment: TrainAugment = None,
    colour_augment: TrainColourAugment = None,
    phase_augment: TrainPhaseAugment = None,
    mask_repeat: TrainMaskRepeat = None,
    lr_halve_every: TrainLrHalveEvery = None,
    init: TrainInit = None,
    parsing_only: TrainParsingOnly = False,
    pixel_epochs: TrainPixelEpochs = None,
    adversarial_weight: TrainAdversarialWeight = None,
    device: TrainDevice = "auto",
    resume: TrainResume = False,
    config: ConfigOption = None,
) -> None:
    """Train a super-resolution network on leukocyte images with expert parsing masks."""
    from leukoscreen.model.gan_train import train_gan
    from leukoscreen.model.networks import design_kwargs  # imports torch: only when training
    from leukoscreen.model.train import train

    base = load_config(config)
    arch_kwargs = None
    if init is not None and arch not in GAN_ARCHS:  # a GAN's --init is its generator's start
        from leukoscreen.model.checkpoint import load_init

        initial = load_init(init, scale if scale is not None else base.train.scale)
        arch = arch or initial.arch
        arch_kwargs = dict(initial.meta.get("arch_kwargs", {}))
    flags = {
        "--init": ("train.init", init),
        "--arch": ("train.arch", arch),
        "--scale": ("train.scale", scale),
        "--epochs": ("train.epochs", epochs),
        "--batch-size": ("train.batch_size", batch_size),
        "--lr": ("train.lr", lr),
        "--seed": ("train.seed", seed),
        "--augment": ("train.augment", augment),
        "--colour-augment": ("train.colour_augment", colour_augment),
        "--phase-augment": ("train.phase_augment", phase_augment),
        "--mask-repeat": ("train.mask_repeat", mask_repeat),
        "--lr-halve-every": ("train.lr_halve_every_epochs", lr_halve_every),
        "--parsing-only": ("train.parsing_only", parsing_only or None),
        "--init (a lab's folder)": ("train.lab_split", None),
        "--pixel-epochs": ("train.pixel_epochs", pixel_epochs),
        "--adversarial-weight": ("train.adversarial_weight", adversarial_weight),
    }
    if arch_kwargs is not None:  # fine-tuning
        flags = with_fine_tune_defaults(flags, parsing_only=parsing_only)
    cfg = override_flags(base, flags).train
    run_dir = out if out is not None else Path("runs") / f"{cfg.arch}_x{cfg.scale}"
    sources = data or [DEFAULT_TRAIN_DATA]
    if cfg.arch in GAN_ARCHS:  # the generator's size follows its --init weights
        result = train_gan(cfg, data=sources, run_dir=run_dir, resume=resume, device=device)
    else:
        kwargs = design_kwargs(cfg.arch) if arch_kwargs is None else arch_kwargs
        result = train(
            cfg, data=sources, run_dir=run_dir, resume=resume, device=device, arch_kwargs=kwargs
        )
    best_key = "val_miou" if cfg.parsing_only else "val_psnr"
    best = max(result.history, key=lambda record: record[best_key], default=None)
    if cfg.arch in GAN_ARCHS:  # a GAN keeps its last epoch, not its best PSNR
        best = result.history[-1] if result.history else None
    summary = f"{cfg.arch} x{cfg.scale}: {result.epochs_done}/{cfg.epochs} epochs in {run_dir}"
    if best is not None:
        word = "last" if cfg.arch in GAN_ARCHS else "best"
        summary += f"; {word} val PSNR {best['val_psnr']:.3f} dB at epoch {int(best['epoch'])}"
        if "val_miou" in best:
            summary += f" (val mIoU {best['val_miou']:.3f})"
        summary += f" -> {result.best_weights}"
    typer.echo(summary)


def evaluate_cmd(
    scale: EvaluateScale = None,
    data: EvaluateData = Path("../shared/data/segmentation_WBC"),
    method: EvaluateMethod = None,
    checkpoint: EvaluateCheckpoint = None,
    split: EvaluateSplit = "test",
    out: EvaluateOut = Path("docs/results"),
    device: EvaluateDevice = None,
    precision: EvaluatePrecision = "fp32",
    figures: EvaluateFigures = True,
    config: ConfigOption = None,
) -> None:
    """Benchmark every method on the test split and write the paper's Table 2."""
    from leukoscreen.model.evaluate import evaluate_methods
    from leukoscreen.model.report import table_markdown, write_results

    cfg = override_flags(load_config(config), {"--device": ("inference.device", device)})
    table = evaluate_methods(
        data=data, scales=scale or SCALES, methods=method, split=split, seed=cfg.train.seed,
        device=cfg.inference.device, precision=precision, figures=figures,
        checkpoints=parse_checkpoint_specs(checkpoint or []),
    )  # fmt: skip
    write_results(table, out)
    typer.echo(table_markdown(table))


def parse_checkpoint_specs(specs: Sequence[str]) -> dict[str, Path]:
    """``["gp_x8=runs/gp_x8/best.pt", ...]`` -> ``{"gp_x8": Path(...)}``.

    Raises:
        UsageError: a spec without ``=`` or with an unknown ``<method>_x<scale>`` name.
    """
    from leukoscreen.model.evaluate import METHODS  # imports torch: only when evaluating

    known = {f"{m}_x{s}" for m in METHODS[1:] for s in SCALES}
    parsed = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or name not in known or not path:
            raise UsageError(
                f"--checkpoint: expected <method>_x<scale>=PATH with <method>_x<scale> one of "
                f"{', '.join(sorted(known))}, got {spec!r}"
            )
        parsed[name] = Path(path)
    return parsed


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to the ``leukoscreen`` app."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
