"""`imcc search` and `imcc finetune`: the co-search and mapping-aware fine-tuning."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from imcc.cli.common import (
    check_outputs,
    seed_argument,
)
from imcc.files import write_text


def _cmd_search(args: argparse.Namespace) -> int:
    from imcc.search import SearchConfig, run_search
    from imcc.search.storage import redact, storage_url

    check_outputs(args, [], ["out"])

    config = SearchConfig(
        model=args.model,
        target=args.target,
        data=args.data,
        trials=args.trials,
        objective=args.objective,
        max_accuracy_drop=args.max_accuracy_drop,
        area_budget_mm2=args.area_budget,
        strategy=args.strategy,
        storage=args.storage,
        study=args.study,
        seed=args.seed,
        out=Path(args.out),
        search_samples=args.limit,
        probe_samples=args.probe,
        check_samples=args.check,
        random_trials=args.random_trials,
        family=args.family,
        family_images=args.family_images,
        psqat=args.psqat,
        psqat_data=args.psqat_data,
        psqat_train=args.psqat_train,
    )
    try:
        result = run_search(config, progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        where = redact(storage_url(config.storage, config.out))
        print(
            f"\ninterrupted: every finished trial is stored in {where}; run the same command "
            "again to resume",
            file=sys.stderr,
        )
        return 130
    print(result.summary)
    written = ["pareto.json", "pareto.png"] + (["best.imcir"] if result.best else [])
    print(f"wrote: {', '.join(str(config.out / name) for name in written)}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    import json

    from imcc.finetune.session import FinetuneConfig, run_finetune
    from imcc.finetune.train import TrainConfig

    check_outputs(args, ["output", "report"], inputs=[args.model])
    config = FinetuneConfig(
        model=args.model,
        target=args.target,
        data=args.data,
        output=args.output,
        train=TrainConfig(
            epochs=args.epochs,
            lr=args.lr,
            batch=args.batch,
            seed=args.seed,
            optimizer=args.optimizer,
            clip=args.clip,
            surrogate_epochs=args.surrogate_epochs,
            surrogate_ramp=args.surrogate_ramp,
            datapath_images=args.datapath_images,
            datapath_lr=args.datapath_lr,
            checkpoint=args.checkpoint,
            weight_decay=args.weight_decay,
            augment=args.augment,
            state=args.state or "",
            resume=args.resume,
            distill=args.distill,
            temperature=args.distill_temperature,
        ),
        train_images=args.train,
        holdout=args.holdout,
        passes=args.passes,
        backward=args.backward,
        sim_batch=args.sim_batch,
    )
    result = run_finetune(
        config,
        progress=sys.stderr.isatty(),
        log=(lambda line: None) if args.json else functools.partial(print, flush=True),
    )
    record = result.to_dict()
    if args.report:
        write_text(args.report, json.dumps(record, indent=2) + "\n", "--report")
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(
            f"wrote {args.output} (fine-tuned weights; the learned MTJ normalisation in its "
            f"metadata) and {result.program} (the program measured)"
        )
        print(
            f"reproduce: imcc simulate {result.program} --data npz:{result.holdout_data} "
            f"--batch {result.sim_batch} --seed {args.seed}"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add search and finetune to the subcommands."""
    search = sub.add_parser(
        "search",
        help="co-search the mapping pipeline: accuracy against "
        "EDAP, energy, latency or area (optuna; resumable)",
        allow_abbrev=False,
    )
    search.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help="an .onnx model or a built-in example (none with --family)",
    )
    search.add_argument(
        "--target", required=True, metavar="T", help="a built-in target name or a .hw file"
    )
    search.add_argument(
        "--data",
        required=True,
        metavar="DATA",
        help="calibration and accuracy data (as compile --calib)",
    )
    search.add_argument(
        "--trials",
        type=int,
        default=100,
        metavar="N",
        help="finished trials the search holds in total (default 100)",
    )
    search.add_argument(
        "--objective",
        metavar="NAME",
        help="edap, energy, latency or area (default edap; xpert: energy)",
    )
    search.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=2.0,
        metavar="POINTS",
        help="accuracy floor: percentage points below the float model (default 2)",
    )
    search.add_argument(
        "--area-budget",
        type=float,
        metavar="MM2",
        help="largest chip area in mm2 (default: the target's budget, if any)",
    )
    search.add_argument(
        "--strategy",
        default="pareto",
        metavar="NAME",
        help="pareto (default), xpert (two phases), random or sensitivity (per-layer mechanisms)",
    )
    search.add_argument(
        "--storage",
        metavar="URL",
        help="SQLAlchemy URL of the trial database (default: sqlite in --out)",
    )
    search.add_argument(
        "--study", metavar="NAME", help="study name (default: model-target-strategy-objective)"
    )
    search.add_argument("--seed", type=seed_argument, default=0, help="seed of the sampler")
    search.add_argument(
        "--out",
        default="search-out",
        metavar="DIR",
        help="output folder: pareto.json, pareto.png, best.imcir, search.db",
    )
    search.add_argument(
        "--limit",
        type=int,
        default=96,
        metavar="N",
        help="samples every trial's accuracy is measured on (default 96)",
    )
    search.add_argument(
        "--probe",
        type=int,
        default=32,
        metavar="N",
        help="first samples that decide whether a trial is pruned (default 32)",
    )
    search.add_argument(
        "--check",
        type=int,
        default=1000,
        metavar="N",
        help="samples every Pareto point is checked on (default 1000)",
    )
    search.add_argument(
        "--random-trials",
        type=int,
        metavar="N",
        help="trials of the random-search comparison (default trials/4; 0: none)",
    )
    search.add_argument(
        "--family",
        metavar="ARCH:DATA:M1,M2",
        help="co-search the channel depth (xpert strategy): a family of "
        "per-stage width multipliers, e.g. vgg:fashion-mnist:0.5,0.75,1; its "
        "candidates train briefly and are cached in --out/candidates",
    )
    search.add_argument(
        "--family-images",
        type=int,
        default=6000,
        metavar="N",
        help="proxy budget: training images per candidate (default 6000, one epoch)",
    )
    search.add_argument(
        "--psqat",
        type=int,
        default=0,
        metavar="N",
        help="sensitivity strategy: fine-tune every composed design with MTJ layers through "
        "its sampled datapath (PS-QAT, one epoch of N images of --psqat-data) before its "
        "accuracy counts; the models are cached in --out/psqat (default 0: off)",
    )
    search.add_argument(
        "--psqat-data",
        metavar="DATA",
        help="labelled training images for --psqat, e.g. cifar10:cifar10_train.npz",
    )
    search.add_argument(
        "--psqat-train",
        type=int,
        metavar="N",
        help="the first N images of --psqat-data train (default all but the last); keep "
        "them apart from --data's",
    )
    search.set_defaults(handler=_cmd_search)

    finetune = sub.add_parser(
        "finetune",
        help="fine-tune a model through its mapped crossbar datapath (torch), "
        "export it, and measure before / after with the bit-accurate simulator",
        allow_abbrev=False,
    )
    finetune.add_argument("model", metavar="MODEL", help="an .onnx model or a built-in example")
    finetune.add_argument(
        "--target", required=True, metavar="T", help="a built-in target name or a .hw file"
    )
    finetune.add_argument(
        "--data",
        required=True,
        metavar="DATA",
        help="labelled data: the first --train images fine-tune (the first "
        "64 also calibrate), the last --holdout images report",
    )
    finetune.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT.onnx",
        help="the fine-tuned model; OUT.imcir (+ .npz) is the program "
        "measured, OUT.holdout.npz the held-out images",
    )
    finetune.add_argument(
        "--epochs",
        type=int,
        default=1,
        metavar="E",
        help="epochs through the sampled datapath (default 1)",
    )
    finetune.add_argument(
        "--surrogate-epochs",
        type=int,
        default=0,
        metavar="E",
        help="fast epochs first: exact integer products plus Gaussian noise "
        "with the datapath error's measured mean and spread (default 0)",
    )
    finetune.add_argument(
        "--surrogate-ramp",
        type=float,
        default=0.5,
        metavar="SHARE",
        help="share of the surrogate epochs over which the error rises to "
        "all of it (default 0.5; 0: all of it from the start)",
    )
    finetune.add_argument(
        "--datapath-images",
        type=int,
        default=0,
        metavar="N",
        help="images per datapath epoch: a fresh random subset of the "
        "training images each epoch (default 0: all)",
    )
    finetune.add_argument(
        "--datapath-lr",
        type=float,
        default=0.0,
        metavar="LR",
        help="peak learning rate of the datapath epochs' own cosine schedule (default 0: --lr)",
    )
    finetune.add_argument(
        "--distill",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of the loss that distils the starting model's float network "
        "(knowledge distillation; default 0: cross-entropy only)",
    )
    finetune.add_argument(
        "--distill-temperature",
        type=float,
        default=4.0,
        metavar="T",
        help="temperature of the distilled soft targets (default 4)",
    )
    finetune.add_argument(
        "--lr",
        type=float,
        default=1e-2,
        metavar="LR",
        help="peak learning rate of the cosine schedule (default 1e-2)",
    )
    finetune.add_argument(
        "--batch", type=int, default=32, metavar="B", help="training batch (default 32)"
    )
    finetune.add_argument(
        "--train",
        type=int,
        metavar="N",
        help="images that fine-tune, from the start (default: all but "
        "--holdout; CIFAR-10's 5,000 here: 4,000)",
    )
    finetune.add_argument(
        "--holdout",
        type=int,
        metavar="N",
        help="images that report, from the end (default: a fifth; CIFAR-10 here: the last 1,000)",
    )
    finetune.add_argument(
        "--passes", metavar="PIPE", help="mapping pipeline (default: the target's default pipeline)"
    )
    finetune.add_argument(
        "--optimizer",
        default="sgd",
        choices=("sgd", "adam"),
        help="default sgd, momentum 0.9 (on digits-cnn / sotmtj, 10 epochs: "
        "SGD at 1e-2 recovers 69%% of the MTJ loss, Adam at 1e-3 36%%)",
    )
    finetune.add_argument(
        "--backward",
        default="clamp",
        choices=("clamp", "tanh"),
        help="MTJ straight-through estimator: StoX-Net's clamp mask (default) or 1 - tanh^2",
    )
    finetune.add_argument(
        "--sim-batch",
        type=int,
        default=64,
        metavar="B",
        help="simulation batch limit (default 64; the largest divisor of --holdout up to it)",
    )
    finetune.add_argument(
        "--seed", type=seed_argument, default=0, help="seed of training, MTJ draws and simulation"
    )
    finetune.add_argument(
        "--clip",
        type=float,
        default=5.0,
        metavar="NORM",
        help="largest gradient norm of a step (default 5; 0: unclipped)",
    )
    finetune.add_argument(
        "--checkpoint",
        action="store_true",
        help="recompute crossbar layers in the backward pass (less memory, more time)",
    )
    finetune.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        metavar="WD",
        help="L2 weight decay of the optimizer (default 0; CIFAR-10 training: 5e-4)",
    )
    finetune.add_argument(
        "--augment",
        action="store_true",
        help="shift each training image by up to 4 pixels and flip it left-right at random "
        "(the CIFAR-10 recipe)",
    )
    finetune.add_argument(
        "--state",
        metavar="DIR",
        help="write the whole training state to DIR/state.pt after every epoch",
    )
    finetune.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --state (it ends as the run never stopped would)",
    )
    finetune.add_argument("--report", metavar="R.json", help="write the result as JSON")
    finetune.add_argument("--json", action="store_true", help="print the result as JSON")
    finetune.set_defaults(handler=_cmd_finetune)
