"""`ssum train`: train the CycleGAN (or pix2pix) OSR->SEM generator on a folder of pairs."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

import torch

from trainer.data import data_pixel_size
from trainer.presets import MODELS, PAIRED_LOSSES, PRESETS, preset
from trainer.train import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="folder with osr/ and sem/ images paired by file name")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, tensorboard, logs)")
    parser.add_argument("--model", choices=MODELS, default=None, help="default: cyclegan")
    parser.add_argument("--preset", choices=list(PRESETS), default="default",
                        help="paper: as Sun et al. 2025; default: the shipped model; tiny: tests")
    parser.add_argument("--epochs", type=int, help="override the preset's epochs")
    parser.add_argument("--batch-size", type=int, help="per process (per GPU under torchrun)")
    parser.add_argument("--crop", type=int, help="training crop size in px (multiple of 4)")
    parser.add_argument("--paired-loss", choices=PAIRED_LOSSES, default=None,
                        help="paired OSR/SEM term: none (pure CycleGAN), l1, shift-l1 (L1 at the "
                             "best shift within +-shift px), blur-l1; pix2pix uses l1 for none")
    parser.add_argument("--lambda-paired", type=float, help="weight of the paired term (CycleGAN)")
    parser.add_argument("--shift", type=int, dest="shift_px", help="shift-l1 window, +- px")
    parser.add_argument("--pixel-size-nm", type=float,
                        help="pixel size of the data (default: from a JSON in --data, else 10)")
    parser.add_argument("--val-every", type=int, help="validate every N epochs")
    parser.add_argument("--val-fraction", type=float, help="share of pairs held out")
    parser.add_argument("--register", action="store_true",
                        help="register each OSR image to its SEM image before training")
    parser.add_argument("--resume", action="store_true",
                        help="continue from RUN/checkpoints/last.pt when it exists")
    parser.add_argument("--init", default=None, metavar="BUNDLE|CHECKPOINT",
                        help="start from these weights: a bundle folder (its OSR->SEM generator) "
                             "or a training checkpoint (every network it has); fresh optimisers "
                             "and schedule (fine-tuning: docs/training.md)")
    parser.add_argument("--lr", type=float, help="override the preset's learning rate (Adam)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--seed", type=int, help="seeds weights, data order, augmentation")
    parser.add_argument("--threads", type=int, help="torch CPU threads per process")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    pixel_size = args.pixel_size_nm or data_pixel_size(args.data)
    cfg = preset(args.preset, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                 crop=args.crop, paired_loss=args.paired_loss, lambda_paired=args.lambda_paired,
                 shift_px=args.shift_px, pixel_size_nm=pixel_size, val_every=args.val_every,
                 val_fraction=args.val_fraction, seed=args.seed, lr=args.lr)
    command = "ssum train " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2 else "ssum train"
    summary = train(cfg, args.data, args.out, args.device, args.resume, args.register, command,
                    init=args.init)
    if os.environ.get("RANK", "0") == "0":
        print(f"trained {summary['epoch']} epochs ({summary['step']} steps); "
              f"best checkpoint {summary['checkpoint']}; validation {summary['evaluation']}")
    return 0
