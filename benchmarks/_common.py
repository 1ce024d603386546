"""Makes ``python benchmarks/<script>.py`` work from a source checkout without installing: the scripts
import this first. What they share (timing summaries, the machine, the JSON report, tables) is
:mod:`ecmf_edge.bench`: ``stats`` (``summarize``, ``measure``), ``system`` (``machine``,
``peak_rss_mb``) and ``report`` (``write_report``, ``print_table``).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
