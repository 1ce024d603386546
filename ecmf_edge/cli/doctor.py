"""``ecmf-edge doctor``: what this installation can run, as a table."""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parsers"]


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ecmf_edge.doctor import format_table, run_checks

    rows = run_checks(args.bundle, verify=not args.no_verify)
    print(format_table(rows))
    failed = [r for r in rows if r.required and not r.ok]
    if failed:
        print(f"\n{len(failed)} required check(s) failed: " + "; ".join(f"{r.item}: {r.detail}" for r in failed))
        return 1 if args.check else 0
    print("\nall required checks passed")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``ecmf-edge doctor``."""
    p = sub.add_parser("doctor", help="report Python, packages, providers, devices and bundle verification")
    p.add_argument("--bundle", default="default", help="bundle name or folder to verify")
    p.add_argument("--no-verify", action="store_true", help="skip sha256 verification of bundle files")
    p.add_argument("--check", action="store_true", help="exit non-zero when a required check fails")
    p.set_defaults(func=_cmd_doctor)
