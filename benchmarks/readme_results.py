"""Regenerate the benchmark section of docs/benchmarks.md from a ``bench.json`` written by ``ecmf-edge bench``.

The section between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` is replaced (or
appended when the markers are absent); nothing in it is typed by hand.

    python benchmarks/readme_results.py bench-out/bench.json [--to docs/benchmarks.md] [--print]
"""
from __future__ import annotations

import argparse
import sys

import _common  # noqa: F401  (puts the source checkout on sys.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="bench.json from `ecmf-edge bench`")
    parser.add_argument("--to", default="docs/benchmarks.md", help="markdown file to update (default docs/benchmarks.md)")
    parser.add_argument("--print", action="store_true", help="print the section instead of writing a file")
    args = parser.parse_args(argv)

    from ecmf_edge.bench.readme import render_section, update_file
    from ecmf_edge.bench.report import read_json
    from ecmf_edge.errors import EcmfError

    try:
        section = render_section(read_json(args.json), json_name=args.json)
        if args.print:
            print(section, end="")
        else:
            print(f"updated: {update_file(args.to, section)}")
    except EcmfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
