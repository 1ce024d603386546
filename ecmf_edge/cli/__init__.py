"""The ``ecmf-edge`` command line: a package of thin commands over the library.

Every :class:`EcmfError` is printed as one line (``ecmf-edge: error: ...``) with exit
status 2; there is no traceback for a problem the user can fix. Each command module
registers its subcommands; heavy imports happen inside the commands, so ``--help``
and runtime commands work without the build or train extras.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ecmf_edge import __version__
from ecmf_edge.errors import EcmfError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from ecmf_edge.cli import bench, build, doctor, label, media, run, train

    parser = argparse.ArgumentParser(prog="ecmf-edge", description="On-device multimodal emotion recognition (ECMF).")
    parser.add_argument("--version", action="version", version=f"ecmf-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and parity figures")
    sub = parser.add_subparsers(dest="command", required=True)
    build.add_parsers(sub)
    media.add_parsers(sub)
    train.add_parsers(sub)
    doctor.add_parsers(sub)
    run.add_run_parser(sub)
    run.add_serve_parser(sub)
    bench.add_bench_parser(sub)
    label.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except EcmfError as exc:
        print(f"ecmf-edge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ecmf-edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
