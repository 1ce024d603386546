"""The MER metric and its companions: weighted F1, accuracy, per-class F1, confusion matrix.

Weighted F1 is computed as ``sklearn.metrics.f1_score(average="weighted")`` does: the
per-class F1 averaged with the true class counts as weights. It is implemented here in
numpy (scikit-learn is only a test/training dependency) and checked against scikit-learn
in the tests. The confusion matrix is also rendered as a PNG with OpenCV.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Report", "evaluate", "confusion_matrix", "render_confusion_png", "format_report"]


@dataclass(frozen=True)
class Report:
    """Scores of one prediction set."""

    labels: tuple[str, ...]
    weighted_f1: float
    accuracy: float
    per_class_f1: dict[str, float]
    support: dict[str, int]
    confusion: np.ndarray  # rows: true label, columns: predicted label
    n: int

    def to_dict(self) -> dict:
        return {"weighted_f1": round(self.weighted_f1, 4), "accuracy": round(self.accuracy, 4), "n": self.n,
                "per_class_f1": {k: round(v, 4) for k, v in self.per_class_f1.items()}, "support": self.support,
                "labels": list(self.labels), "confusion": self.confusion.tolist()}


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def evaluate(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> Report:
    """Scores over the label indices ``y_true``/``y_pred``; classes absent from y_true get no weight."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    n = int(support.sum())
    weighted = float((f1 * support).sum() / n) if n else 0.0
    return Report(tuple(labels), weighted, float(tp.sum() / n) if n else 0.0,
                  {l: float(f) for l, f in zip(labels, f1)}, {l: int(s) for l, s in zip(labels, support)}, cm, n)


def format_report(report: Report, title: str = "") -> str:
    """Text block: headline scores, per-class F1 and the confusion matrix."""
    width = max(len(l) for l in report.labels)
    lines = [f"{title}  weighted F1 {report.weighted_f1:.3f}  accuracy {report.accuracy:.3f}  (n={report.n})".strip()]
    lines.append("  per-class F1: " + ", ".join(f"{l} {report.per_class_f1[l]:.2f} ({report.support[l]})" for l in report.labels))
    lines.append("  " + " " * (width + 1) + " ".join(f"{l[:6]:>6}" for l in report.labels) + "   <- predicted")
    for label, row in zip(report.labels, report.confusion):
        lines.append(f"  {label:>{width}} " + " ".join(f"{v:>6d}" for v in row))
    return "\n".join(lines)


def render_confusion_png(report: Report, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG (counts in the cells)."""
    import cv2

    k = len(report.labels)
    cell, left, top = 70, 110, 80
    image = np.full((top + k * cell + 40, left + k * cell + 20, 3), 255, np.uint8)
    rows = report.confusion.sum(axis=1, keepdims=True)
    norm = np.divide(report.confusion, rows, out=np.zeros(report.confusion.shape), where=rows > 0)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, title[:60], (10, 22), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, f"weighted F1 {report.weighted_f1:.3f}  acc {report.accuracy:.3f}  n={report.n}", (10, 46), font, 0.5,
                (40, 40, 40), 1, cv2.LINE_AA)
    for i in range(k):
        cv2.putText(image, report.labels[i][:8], (8, top + i * cell + cell // 2 + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, report.labels[i][:7], (left + i * cell + 4, top - 8), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(k):
            shade = int(255 - 200 * norm[i, j])
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(image, (x0, y0), (x0 + cell - 2, y0 + cell - 2), (255, shade, shade), -1)
            colour = (255, 255, 255) if norm[i, j] > 0.55 else (0, 0, 0)
            cv2.putText(image, str(int(report.confusion[i, j])), (x0 + 8, y0 + cell // 2 + 5), font, 0.5, colour, 1, cv2.LINE_AA)
    cv2.putText(image, "rows: true label, columns: predicted", (10, image.shape[0] - 12), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return path
