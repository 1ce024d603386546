"""A clip's timeline as a picture: label probabilities over time, the transcript under them, and the
modality weights (matplotlib, drawn off-screen)."""
from __future__ import annotations

from pathlib import Path

from ecmf_edge.errors import DependencyError
from ecmf_edge.modalities import MODALITIES
from ecmf_edge.timeline import ClipResult

__all__ = ["timeline_png", "require_matplotlib"]

# One colour per label and per modality, readable on white and for common colour-vision deficiencies.
_LABEL_COLOURS = {"neutral": "#7f7f7f", "angry": "#d62728", "happy": "#2ca02c", "sad": "#1f77b4",
                  "worried": "#9467bd", "surprise": "#ff7f0e"}
_MODALITY_COLOURS = {"frame": "#8c564b", "face": "#e377c2", "audio": "#17becf", "text": "#bcbd22"}


def require_matplotlib():
    """matplotlib's pyplot on the off-screen Agg backend.

    Raises:
        DependencyError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise DependencyError("matplotlib is not installed: run `pip install 'ecmf-edge[plots]'` (or `pip install matplotlib`)") from None
    return plt


def timeline_png(result: ClipResult, path: str | Path, title: str | None = None) -> Path:
    """Write the timeline picture of one clip; returns its path.

    Raises:
        DependencyError: matplotlib is not installed.
    """
    plt = require_matplotlib()
    rows = result.rows
    mids = [(r.start + r.end) / 2 for r in rows]
    width = [max(r.end - r.start, 1e-3) for r in rows]
    duration = max([r.end for r in rows] or [1.0])
    fig, (ax_p, ax_t, ax_w) = plt.subplots(3, 1, figsize=(max(9.0, min(25.0, 3.0 + duration / 4)), 7.0), sharex=True,
                                           gridspec_kw={"height_ratios": [3.0, 1.1, 1.4]})
    try:
        for label in result.labels:
            ax_p.plot(mids, [r.probabilities.get(label, float("nan")) if r.label else float("nan") for r in rows],
                      label=label, color=_LABEL_COLOURS.get(label), linewidth=1.8)
        ax_p.set_ylim(0, 1)
        ax_p.set_ylabel("probability")
        ax_p.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
        s = result.summary
        ax_p.set_title(title or f"{Path(s.file).name}: {s.label or 'no label'} ({s.confidence:.2f}), {s.duration_s:.0f} s"
                       + (f", speech: {s.language}" if s.language else ""), fontsize=10)
        for r in rows:  # the step's label as a thin band under the curves
            if r.label:
                ax_p.axvspan(r.start, r.end, ymin=0, ymax=0.04, color=_LABEL_COLOURS.get(r.label, "#000000"), linewidth=0)
        ax_t.set_ylim(0, 1)
        ax_t.set_yticks([])
        ax_t.set_ylabel("speech")
        for i, segment in enumerate(result.transcripts):
            text = segment.text if len(segment.text) <= 60 else segment.text[:57] + "..."
            ax_t.axvline(segment.time, color="#999999", linewidth=0.8)
            ax_t.text(segment.time, 0.8 - 0.3 * (i % 3), f" {text}", fontsize=7, va="center", ha="left", clip_on=True)
        bottom = [0.0] * len(rows)
        for m in MODALITIES:
            values = [r.modality_weights.get(m, 0.0) if r.label else 0.0 for r in rows]
            ax_w.bar(mids, values, width=width, bottom=bottom, color=_MODALITY_COLOURS[m], label=m, linewidth=0)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax_w.set_ylim(0, 1)
        ax_w.set_ylabel("modality weight")
        ax_w.set_xlabel("time (s)")
        ax_w.set_xlim(0, duration)
        ax_w.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    return out
