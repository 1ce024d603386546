"""`ecmf-edge train` and `ecmf-edge eval` end to end on a tiny, clearly labelled MELD-format fixture."""
from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("torch")

from test_fusion import FIXTURE  # noqa: E402

from ecmf_edge.cli import main  # noqa: E402

EMOTION = {"neutral": "neutral", "angry": "anger", "happy": "joy", "sad": "sadness", "worried": "fear", "surprise": "surprise"}


def _write_meld(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"])
        for i, (text, label, dialogue) in enumerate(rows):
            writer.writerow([i + 1, text, "A", EMOTION[label], "x", dialogue, i])


def write_meld_fixture(root):
    """A MELD-format train/dev pair from the clearly labelled fixture sentences (6 train, 2 dev per class)."""
    (root / "meld").mkdir(parents=True, exist_ok=True)
    train, dev = [], []
    for label, sentences in FIXTURE.items():
        for i, text in enumerate(sentences):
            (dev if i >= 6 else train).append((text, label, i))
    _write_meld(root / "meld" / "train_sent_emo.csv", train)
    _write_meld(root / "meld" / "dev_sent_emo.csv", dev)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_meld_fixture(tmp_path_factory.mktemp("data"))


def test_train_then_eval(capsys, bundle_root, data_root, tmp_path):
    out = tmp_path / "head"
    code = main(["train", "--bundle", str(bundle_root), "--data", str(data_root), "--cache", str(tmp_path / "cache"),
                 "--out", str(out), "--no-ablation", "--epochs", "12", "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "family:text" in stdout and "modality ablation" in stdout
    for name in ("fusion_head.onnx", "fusion_head.json", "fusion_head_reference.npz", "report.json", "confusion_family_text.png"):
        assert (out / name).is_file(), name
    record = json.loads((out / "fusion_head.json").read_text())
    assert record["data"]["meld"]["test"] == 12 and record["metrics"]["family:text"]["n"] == 12
    assert record["parity"]["max_abs_diff"] <= 1e-4
    cached = list((tmp_path / "cache").rglob("meld.npz"))
    assert len(cached) == 1, "features must be cached once per encoder hash"

    code = main(["eval", "--bundle", str(bundle_root), "--data", str(data_root), "--cache", str(tmp_path / "cache"),
                 "--head", str(out), "--out", str(tmp_path / "eval"), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0 and "weighted F1" in stdout and (tmp_path / "eval" / "confusion_family_text.png").is_file()
    f1 = float(stdout.split("family:text  weighted F1 ")[1].split()[0])
    assert f1 == pytest.approx(record["metrics"]["family:text"]["weighted_f1"], abs=1e-3)


def test_train_without_data_is_a_clear_error(capsys, bundle_root, tmp_path):
    code = main(["train", "--bundle", str(bundle_root), "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert code == 2 and "no corpus given" in capsys.readouterr().err
