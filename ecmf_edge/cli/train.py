"""``ecmf-edge train`` and ``eval``: thin commands over :mod:`ecmf_edge.train`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ecmf_edge.cli.common import add_data_options, add_ray_options, corpus_paths, given, make_enricher, ray_options, with_default

__all__ = ["add_parsers", "fusion_options"]

_HEAD = "ecmf_edge.train.fusion.head:HeadConfig"
_TRAIN = "ecmf_edge.train.fusion.train:TrainOptions"


def fusion_options(args: argparse.Namespace):
    """``(HeadConfig, TrainOptions)`` of ``ecmf-edge train`` for the fusion head (only the options given; the rest:
    the classes' defaults)."""
    from ecmf_edge.train.fusion.head import HeadConfig
    from ecmf_edge.train.fusion.train import TrainOptions

    return HeadConfig(**given(args, d_model="d_model", layers="layers")), TrainOptions(**given(args, epochs="epochs", seed="seed"))


def _cmd_train(args: argparse.Namespace) -> int:
    if args.branch != "fusion":
        return _train_branch(args)
    from ecmf_edge.features import FeatureExtractor
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.train.fusion.pipeline import TrainPlan, run_training
    from ecmf_edge.train.fusion.refine import RefineOptions

    paths = corpus_paths(args)
    bundle = load_bundle(**given(args, bundle="source"))
    head, train = fusion_options(args)
    extractor = FeatureExtractor(bundle, enricher=make_enricher(args), cluster=ray_options(args))
    plan = TrainPlan(paths=paths, cache_dir=Path(args.cache), out_dir=Path(args.out),
                     head=head, train=train,
                     refine=None if args.no_refine else RefineOptions(), ablations=not args.no_ablation)
    summary = run_training(plan, extractor, progress=not args.quiet)
    if summary.get("refinement"):
        r = summary["refinement"]
        print(f"label refinement: {r['changed_soft']} soft + {r['changed_hard']} hard label changes")
    for text in summary["reports"].values():
        print(text)
    print("\nmodality ablation (weighted F1):")
    for name, row in summary["modality_ablation"].items():
        print(f"  {name:<6} {row['weighted_f1']:.3f}  n={row['n']:<5} {row['data']}")
    print("\ncomponent ablation (weighted F1 per modality family, real test samples):")
    for name, variant in summary["variants"].items():
        fams = {k.split(':')[1]: v["weighted_f1"] for k, v in variant["test"].items() if k.startswith("family:")}
        combo = variant.get("combinations", {}).get("V+A+T")
        print(f"  {name:<14} " + "  ".join(f"{k} {v:.3f}" for k, v in fams.items())
              + (f"  V+A+T combinations {combo:.3f}" if combo is not None else "") + f"   ({variant['train_seconds']} s)")
    print(f"\nwritten: {args.out}/fusion_head.onnx, fusion_head.json, report.json, confusion_*.png")
    return 0


def _train_branch(args: argparse.Namespace) -> int:
    from ecmf_edge.train.branches.run import train_branch

    extractor = None
    if args.branch == "speech":
        from ecmf_edge.features import FeatureExtractor
        from ecmf_edge.runtime.bundle import load_bundle

        extractor = FeatureExtractor(load_bundle(**given(args, bundle="source")), cluster=ray_options(args))
    out = Path(args.out if args.out != "trained-head" else f"trained-{args.branch}")
    lines = train_branch(args.branch, corpus_paths(args), out, extractor=extractor, cache=Path(args.cache),
                         epochs=args.epochs, progress=not args.quiet, **given(args, seed="seed"),
                         llm_context_file=args.llm_context_file, backbone=args.backbone, size=args.size,
                         keep_speech_head=args.keep_speech_head)
    print(f"{args.branch} branch (test splits as in MODEL_CARD.md):")
    for line in lines:
        print(f"  {line}")
    print(f"written: {out}/ (use it with `ecmf-edge export --branches {out}`)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ecmf_edge.features import FeatureExtractor
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.train.fusion.evaluate import evaluate_head
    from ecmf_edge.train.metrics import format_report

    extractor = FeatureExtractor(load_bundle(**given(args, bundle="source")), enricher=make_enricher(args), cluster=ray_options(args))
    reports = evaluate_head(extractor, corpus_paths(args), Path(args.cache), head_dir=Path(args.head) if args.head else None,
                            out=Path(args.out), progress=not args.quiet)
    for name, report in reports.items():
        print(format_report(report, name))
    print(f"confusion matrices written to {args.out}/")
    return 0


def add_parsers(sub: Any) -> None:
    """Register the training commands."""
    p = sub.add_parser("train", help="train the ECMF fusion head or one modality branch on local corpora, evaluate, save ONNX")
    add_data_options(p)
    p.add_argument("--branch", choices=("fusion", "face", "speech", "text"), default="fusion",
                   help="what to train: the fusion head (default) or one branch (see MODEL_CARD.md)")
    p.add_argument("--out", default="trained-head", help="output folder (default trained-head, or trained-<branch>)")
    p.add_argument("--epochs", type=int, help=with_default("training epochs", _TRAIN, "epochs",
                                                           lambda n: f"{n} for the fusion head, each branch its own"))
    p.add_argument("--llm-context-file", help="text branch: JSON of LLM context sentences per MELD utterance "
                   "(\"<split>:<dialogue>:<utterance>\": \"...\"), added to the context segment")
    p.add_argument("--backbone", choices=("efficientnet_lite0", "mini_xception"),
                   help="face branch: the pretrained network to fine-tune (default efficientnet_lite0)")
    p.add_argument("--size", type=int, choices=range(32, 225), metavar="PX",
                   help="face branch: side of the square grey input, 32-224 (default 80; mini_xception: 64 only)")
    p.add_argument("--keep-speech-head", metavar="DIR",
                   help="speech branch: keep the speaker-normalised head of DIR/speech_head.onnx (e.g. ecmf_edge/weights: the "
                   "token the shipped fusion head reads) and train only its population path")
    p.add_argument("--d-model", type=int, help=with_default("fusion head: width of the shared token space", _HEAD, "d_model"))
    p.add_argument("--layers", type=int, help=with_default("fusion head: self-attention layers", _HEAD, "layers"))
    p.add_argument("--seed", type=int, help=with_default("random seed", _TRAIN, "seed"))
    p.add_argument("--no-refine", action="store_true", help="skip multi-source label refinement")
    p.add_argument("--no-ablation", action="store_true", help="skip the component ablation runs")
    add_ray_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a fusion head on the person-independent test splits")
    add_data_options(p)
    p.add_argument("--head", help="folder with fusion_head.onnx/.json (default: the bundle's head)")
    p.add_argument("--out", default="eval-out", help="folder for the confusion-matrix PNGs")
    add_ray_options(p)
    p.set_defaults(func=_cmd_eval)
