"""The ``leukoscreen`` command line: one typer command per user task.

Each command body parses, loads the config, applies flag overrides and calls one function.
:func:`main` is the console-script entry point: a :class:`LeukoscreenError` or a usage error
becomes one line on stderr and exit status 2; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from leukoscreen.model import __version__
from leukoscreen.model.errors import LeukoscreenError
from leukoscreen.pipeline.config import Config, load_config, override, to_toml

app = typer.Typer(
    name="leukoscreen",
    help=(
        "Find every leukocyte in a low-magnification blood-smear scan, super-resolve it x4 or x8 "
        "with the geometry-prior network of Hua et al. (J. Biomed. Opt. 2020), and write the "
        "cells, their nucleus/cytoplasm parsing maps and a cell table into one Zarr store."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config file (see config.toml in the project); built-in defaults without it.",
        dir_okay=False,
    ),
]


MppOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Microns per level-0 pixel, overriding the slide metadata (needed for PNG/JPEG).",
    ),
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"leukoscreen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Leukocyte prescreening: detect, super-resolve and parse leukocytes into Zarr."""


def _load(config_path: Path | None) -> Config:
    return load_config(config_path)


@app.command("config")
def config_cmd(config: ConfigOption = None) -> None:
    """Print the resolved configuration (defaults overlaid with --config) as TOML."""
    typer.echo(to_toml(_load(config)), nl=False)


@app.command("run")
def run_cmd(
    slides: Annotated[
        list[Path],
        typer.Argument(help="Slide files (.svs and other OpenSlide formats, TIFF, PNG/JPEG)."),
    ],
    scale: Annotated[
        int | None, typer.Option(help="Super-resolution factor, 4 or 8 (config: inference.scale).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output store for one slide; with several slides, the folder for their stores. "
            "Default: <slide stem>.leukoscreen.zarr in the current folder."
        ),
    ] = None,
    mpp: MppOption = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Cells per SR task and per Zarr chunk (inference.batch_size)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes of the embedded Dask cluster (default: auto)."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Address of an existing Dask scheduler (tcp://host:8786) to run on."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Where the network runs: auto, cpu or cuda.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run's store.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete an existing store and start over.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Detect, super-resolve and parse every leukocyte of each slide into a Zarr store."""
    from leukoscreen.pipeline.run import run_slides

    cfg = override(
        _load(config),
        **{"inference.scale": scale, "slide.mpp": mpp, "inference.batch_size": batch_size,
           "cluster.n_workers": workers, "cluster.scheduler": scheduler,
           "inference.device": device, "output.resume": resume or None,
           "output.overwrite": overwrite or None},
    )  # fmt: skip
    for summary in run_slides(slides, cfg, out=out):
        typer.echo(summary.describe())


@app.command("detect")
def detect_cmd(
    slides: Annotated[
        list[Path],
        typer.Argument(help="Slide files (.svs and other OpenSlide formats, TIFF, PNG/JPEG)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Table file for one slide (.csv or .parquet, by the suffix); with several "
            "slides, the folder for their tables. Default: <slide stem>.cells.csv in the "
            "current folder."
        ),
    ] = None,
    mpp: MppOption = None,
    config: ConfigOption = None,
) -> None:
    """Detect leukocytes only (no super-resolution), in seconds: write each slide's cell table
    (the columns of the store's table) and print its leukocyte count."""
    from leukoscreen.pipeline.tables import detect_slides

    cfg = override(_load(config), **{"slide.mpp": mpp})
    for summary in detect_slides(slides, cfg, out=out):
        typer.echo(summary.describe())


DEFAULT_TRAIN_DATA = Path("../shared/data/segmentation_WBC")
FINE_TUNE = {"epochs": 20, "lr": 5e-5}
"""``leukoscreen train --init`` defaults (``docs/model-card.md``, fine-tuning)."""


@app.command("train")
def train_cmd(
    arch: Annotated[
        str | None,
        typer.Option(
            help=(
                "Network: gp, np, srcnn, vdsr, srresnet or gpsft. [default: train.arch of the "
                "config, gp]"
            ),
            show_default=False,
        ),
    ] = None,
    scale: Annotated[
        int | None,
        typer.Option(
            help="Super-resolution factor: 4 or 8. [default: train.scale of the config, 8]",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
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
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run folder for last.pt and best.pt. [default: runs/<arch>_x<scale>]",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Passes over the training split (paper: 100).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per optimiser step (paper: 8).")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="Adam learning rate at the start, halved every 10 epochs (paper: 1e-4)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of initialisation, shuffling and the split.")
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment",
            help="Flip / rotate each training image by one of the 8 symmetries of the square.",
            show_default=False,
        ),
    ] = None,
    colour_augment: Annotated[
        bool | None,
        typer.Option(
            "--colour-augment/--no-colour-augment",
            help="Recolour each training image in optical-density space (stain amount and hue, "
            "lamp tint, brightness) and degrade it again, for other labs' colours.",
            show_default=False,
        ),
    ] = None,
    mask_repeat: Annotated[
        int | None,
        typer.Option(
            help="Show each image that has a parsing mask this many times per epoch (when "
            "mask-less sources outnumber the masked ones). [default: 1]",
            show_default=False,
        ),
    ] = None,
    lr_halve_every: Annotated[
        int | None,
        typer.Option(help="Halve the learning rate every this many epochs (paper: 10; 0: never)."),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune instead of training from scratch: start from 'default' (the shipped "
            "default network), a network name (its shipped weights) or a weights file. The arch "
            "follows the weights. Masks are optional: without any, a prior network's parsing "
            "part is kept as shipped and only the SR part adapts. Unless given, fine-tuning "
            f"uses --epochs {FINE_TUNE['epochs']}, --lr {FINE_TUNE['lr']:g} held constant.",
            show_default=False,
        ),
    ] = None,
    parsing_only: Annotated[
        bool,
        typer.Option(
            "--parsing-only",
            help="With --init on GP-SFT weights: train only the parsing map's HR modules on the "
            "images with masks; the SR image stays exactly as in the --init weights and best.pt "
            "is the epoch with the best validation mIoU.",
        ),
    ] = False,
    device: Annotated[
        str, typer.Option(help="auto (CUDA when present, else CPU), cpu or cuda.")
    ] = "auto",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --out from its last.pt (same config; --epochs may grow).",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Train a super-resolution network on leukocyte images with expert parsing masks."""
    from leukoscreen.model.networks import design_kwargs  # imports torch: only when training
    from leukoscreen.model.train import train

    base = _load(config)
    arch_kwargs = None
    if init is not None:
        from leukoscreen.model.checkpoint import load_init

        initial = load_init(init, scale if scale is not None else base.train.scale)
        arch = arch or initial.arch
        arch_kwargs = dict(initial.meta.get("arch_kwargs", {}))
        epochs = epochs if epochs is not None else int(FINE_TUNE["epochs"])
        lr = lr if lr is not None else float(FINE_TUNE["lr"])
        lr_halve_every = lr_halve_every if lr_halve_every is not None else 0
    cfg = override(
        base,
        **{
            "train.init": init,
            "train.arch": arch,
            "train.scale": scale,
            "train.epochs": epochs,
            "train.batch_size": batch_size,
            "train.lr": lr,
            "train.seed": seed,
            "train.augment": augment,
            "train.colour_augment": colour_augment,
            "train.mask_repeat": mask_repeat,
            "train.lr_halve_every_epochs": lr_halve_every,
            "train.parsing_only": parsing_only or None,
        },
    ).train
    run_dir = out if out is not None else Path("runs") / f"{cfg.arch}_x{cfg.scale}"
    result = train(
        cfg,
        data=data or [DEFAULT_TRAIN_DATA],
        run_dir=run_dir,
        resume=resume,
        device=device,
        arch_kwargs=design_kwargs(cfg.arch) if arch_kwargs is None else arch_kwargs,
    )
    best_key = "val_miou" if cfg.parsing_only else "val_psnr"
    best = max(result.history, key=lambda record: record[best_key], default=None)
    summary = f"{cfg.arch} x{cfg.scale}: {result.epochs_done}/{cfg.epochs} epochs in {run_dir}"
    if best is not None:
        summary += f"; best val PSNR {best['val_psnr']:.3f} dB at epoch {int(best['epoch'])}"
        if "val_miou" in best:
            summary += f" (val mIoU {best['val_miou']:.3f})"
        summary += f" -> {result.best_weights}"
    typer.echo(summary)


@app.command("evaluate")
def evaluate_cmd(
    scale: Annotated[
        list[int] | None,
        typer.Option(
            "--scale", metavar="N", help="SR factor to evaluate, 4 or 8; repeat for both (default)."
        ),
    ] = None,
    data: Annotated[
        Path,
        typer.Option(
            help="segmentation_WBC root or a field set with leukocyte boxes (BCCD, DeepBioNet, "
            "draaslan: its boxed cells cropped; the test part of the source's fixed split is "
            "evaluated), or any folder of HR images with optional <stem>_mask.png masks (all of "
            "its images are evaluated)."
        ),
    ] = Path("../shared/data/segmentation_WBC"),
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            metavar="NAME",
            help="Method to run: bicubic, srcnn, vdsr, srresnet, np, gp or gpsft; repeatable. "
            "Default: all, reporting those without shipped weights as n/a.",
        ),
    ] = None,
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint",
            metavar="NAME=PATH",
            help="Weights to use instead of the shipped ones, as <method>_x<scale>=PATH "
            "(e.g. gp_x8=runs/gp_x8/best.pt); repeatable.",
        ),
    ] = None,
    split: Annotated[
        str, typer.Option(help="Part of the segmentation_WBC split: train, val or test.")
    ] = "test",
    out: Annotated[
        Path,
        typer.Option(help="Folder for table2.md/.csv/.json and fig_x4.png/fig_x8.png."),
    ] = Path("docs/results"),
    device: Annotated[
        str | None,
        typer.Option(help="Where the networks run: auto, cpu or cuda (config: inference.device)."),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(help="fp32 (reproducible, the paper's float32) or bf16/auto (faster)."),
    ] = "fp32",
    figures: Annotated[
        bool, typer.Option("--figures/--no-figures", help="Also write the Figs. 4-5 style PNGs.")
    ] = True,
    config: ConfigOption = None,
) -> None:
    """Benchmark every method on the test split and write the paper's Table 2."""
    from leukoscreen.model.evaluate import evaluate_methods, parse_checkpoint_specs, write_results

    cfg = override(_load(config), **{"inference.device": device})
    table = evaluate_methods(
        data=data, scales=scale or (4, 8), methods=method, split=split, seed=cfg.train.seed,
        device=cfg.inference.device, precision=precision, figures=figures,
        checkpoints=parse_checkpoint_specs(checkpoint or []),
    )  # fmt: skip
    write_results(table, out)
    typer.echo(table.to_markdown())


@app.command("upscale")
def upscale_cmd(
    images: Annotated[
        list[Path],
        typer.Argument(
            help="LR image files (PNG, JPEG, BMP, TIFF), grey or RGB, 8-bit.",
            metavar="IMAGE",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder for <stem>_x<s>.png and, for gp, <stem>_x<s>_parsing.png.",
            show_default=False,
        ),
    ],
    scale: Annotated[
        int | None,
        typer.Option(
            help="Super-resolution factor: 4 or 8. [default: inference.scale of the config, 8]",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help=(
                "Network: default, gp or gpsft (with parsing map), np, srcnn, vdsr, srresnet or "
                "bicubic. [default: inference.arch of the config, default]"
            ),
            show_default=False,
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Weights file (e.g. a run's best.pt) instead of the shipped weights; its own arch "
                "and scale are used, and --arch/--scale, when given, must match them."
            ),
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="auto (CUDA when present, else CPU), cpu or cuda. [default: inference.device]",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Super-resolve single image files and write SR images and coloured parsing maps."""
    from leukoscreen.model.inference import load_checkpoint, load_pretrained
    from leukoscreen.model.upscale_files import check_image_files, upscale_files

    cfg = override(
        _load(config),
        **{
            "inference.arch": arch,
            "inference.scale": scale,
            "inference.device": device,
            "inference.checkpoint": None if checkpoint is None else str(checkpoint),
        },
    ).inference
    check_image_files(images)  # a missing input is reported before any weights are loaded
    if cfg.checkpoint:
        upscaler = load_checkpoint(
            cfg.checkpoint,
            device=cfg.device,
            precision=cfg.precision,
            expected_arch=arch,
            expected_scale=scale,
        )
    else:
        upscaler = load_pretrained(cfg.arch, cfg.scale, device=cfg.device, precision=cfg.precision)
    for path in upscale_files(images, out_dir=out, upscaler=upscaler):
        typer.echo(path)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status (also used by tests)."""
    command = typer.main.get_command(app)
    try:
        # Without standalone mode click returns the code of an Exit (typer.Exit(code=1) in a
        # command body) instead of raising it; anything else is the command's return value.
        status = command.main(args=argv, prog_name="leukoscreen", standalone_mode=False)
    except typer.Exit as stop:
        return int(stop.exit_code)
    except typer.Abort:
        typer.echo("leukoscreen: aborted", err=True)
        return 130
    except typer.TyperException as err:
        # Unknown command or option, bad value: one line, exit 2 (click's convention).
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        if message.startswith("Usage:"):  # no command given: show the help as it is
            typer.echo(message, err=True)
        else:
            typer.echo(f"leukoscreen: {message}", err=True)
        return 2
    except LeukoscreenError as err:
        typer.echo(f"leukoscreen: error: {err}", err=True)
        return 2
    return status if isinstance(status, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def entry() -> None:  # pragma: no cover - thin wrapper for the console script
    """Console script: run :func:`main` and exit with its status."""
    sys.exit(main())
