"""The ECMF fusion head: masking, export parity, metrics, label refinement and learning."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ecmf_edge.errors import InputError  # noqa: E402
from ecmf_edge.labels import MER2025_LABELS  # noqa: E402
from ecmf_edge.modalities import MODALITIES, RAW_TOKEN_DIMS  # noqa: E402
from ecmf_edge.runtime.fusion_head import FusionHead  # noqa: E402
from ecmf_edge.train.corpus_features import FeatureTable  # noqa: E402
from ecmf_edge.train.fusion.head import HeadConfig, build_head  # noqa: E402
from ecmf_edge.train.fusion.refine import RefineOptions, refine_labels  # noqa: E402
from ecmf_edge.train.fusion.save import save_head  # noqa: E402
from ecmf_edge.train.fusion.train import TrainOptions, predict_table, train_head  # noqa: E402
from ecmf_edge.train.metrics import evaluate, render_confusion_png  # noqa: E402

LABELS = tuple(MER2025_LABELS)

# A clearly labelled text fixture (written for this test, not corpus data): 8 sentences per class.
FIXTURE = {
    "neutral": ["The bus leaves at nine.", "Please put the files on my desk.", "The meeting moved to room four.",
                "We need two more chairs.", "The report has twelve pages.", "I will call you tomorrow morning.",
                "The shop closes at six.", "Take the second street on the left."],
    "angry": ["I am furious with you right now!", "Stop lying to me, I am so angry!", "This is outrageous and I hate it!",
              "How dare you treat me like this!", "I'm sick and tired of your excuses!", "You ruined everything, I'm livid!",
              "Get out of my room, I am so mad!", "That makes me want to scream in rage!"],
    "happy": ["I am so happy today, everything is wonderful!", "We won, this is the best day ever!", "I love this, thank you so much!",
              "What a delightful surprise party, I'm thrilled!", "I got the job and I'm overjoyed!", "This makes me smile so much!",
              "I feel fantastic and full of joy!", "Hooray, we did it, I'm delighted!"],
    "sad": ["I miss her so much, I can't stop crying.", "I feel so lonely and empty.", "My dog died yesterday and I am heartbroken.",
            "Nothing matters anymore, I'm so sad.", "I lost everything and feel hopeless.", "It hurts to know he is gone forever.",
            "I cried all night, I'm devastated.", "I'm so down and miserable today."],
    "worried": ["I'm scared something bad will happen.", "I am so nervous about the exam tomorrow.", "What if they never come back? I'm afraid.",
                "I can't sleep, I'm anxious about the surgery.", "I'm terrified of losing my job.", "I worry that I'll fail again.",
                "My heart is racing, I'm so frightened.", "I'm afraid to walk home alone tonight."],
    "surprise": ["Wow, I did not expect that at all!", "What? You're kidding me, really?", "Oh my, I can't believe you're here!",
                 "No way, that's so unexpected!", "Whoa, where did that come from?", "Really? I'm shocked, I had no idea!",
                 "Wait, you got married? That's astonishing!", "Goodness, what a surprise to see you!"],
}


def _table(features: dict[str, np.ndarray], mask: np.ndarray, labels: list[str], corpus: str = "fixture") -> FeatureTable:
    n = len(labels)
    return FeatureTable(np.array([f"{corpus}:{i}" for i in range(n)]), np.full(n, corpus), np.array([f"{corpus}:{i}" for i in range(n)]),
                        np.array(labels), features, mask.astype(np.float32), np.zeros((n, 7), np.float32))


@pytest.fixture(scope="module")
def text_table(bundle):
    from ecmf_edge.text.text_encoder import TextEncoder
    from ecmf_edge.text.text_path import TextFeaturizer

    featurizer = TextFeaturizer(TextEncoder.from_bundle(bundle), None)
    labels, rows = [], []
    for label, sentences in FIXTURE.items():
        for sentence in sentences:
            labels.append(label)
            rows.append(featurizer.featurize(sentence).vector)
    n = len(labels)
    feats = {m: np.zeros((n, RAW_TOKEN_DIMS[m]), np.float32) for m in MODALITIES}
    feats["text"] = np.stack(rows)
    mask = np.zeros((n, 4), np.float32)
    mask[:, 3] = 1
    return _table(feats, mask, labels, "textfix")


def _random_inputs(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {m: torch.from_numpy(rng.standard_normal((n, RAW_TOKEN_DIMS[m])).astype(np.float32)) for m in MODALITIES}


def test_absent_tokens_have_no_effect_and_weights_cover_present_ones():
    model = build_head(HeadConfig()).eval()
    x = _random_inputs()
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 1], [0, 1, 0, 1]], dtype=torch.float32)
    with torch.no_grad():
        _, p1, w1 = model(*[x[m] for m in MODALITIES], mask)
        changed = {m: (v if m in ("frame", "face") else v * 0 + 7.0) for m, v in x.items()}
        _, p2, w2 = model(*[changed[m] for m in MODALITIES], mask)
    assert torch.allclose(w1.sum(1), torch.ones(4), atol=1e-5)
    assert torch.all(w1[mask == 0] == 0)
    assert torch.allclose(p1[0], p2[0], atol=1e-5), "an absent modality changed the prediction"
    assert not torch.allclose(p1[1], p2[1]), "a present modality must matter"


def test_ablation_switches_build_and_run():
    for config in (HeadConfig(attention=False), HeadConfig(residual=False), HeadConfig(layers=2, d_model=64)):
        model = build_head(config).eval()
        x = _random_inputs(2)
        _, p, w = model(*[x[m] for m in MODALITIES], torch.ones(2, 4))
        assert p.shape == (2, 6) and torch.allclose(p.sum(1), torch.ones(2), atol=1e-5)


def test_weighted_f1_matches_scikit_learn(tmp_path):
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 500)
    pred = np.where(rng.random(500) < 0.6, y, rng.integers(0, 6, 500))
    report = evaluate(y, pred, LABELS)
    assert report.weighted_f1 == pytest.approx(f1_score(y, pred, average="weighted"), abs=1e-9)
    assert report.accuracy == pytest.approx(accuracy_score(y, pred))
    png = render_confusion_png(report, tmp_path / "cm.png", "test")
    import cv2

    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 300 and image.std() > 20


def test_training_learns_and_exports_with_parity(text_table, tmp_path, bundle):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(text_table))
    # 6 sentences per class to train, 2 to test
    test_idx = np.concatenate([np.flatnonzero(text_table.labels == l)[6:] for l in LABELS])
    train_idx = np.setdiff1d(order, test_idx)
    train, test = text_table.subset(train_idx), text_table.subset(test_idx)
    options = TrainOptions(epochs=25, samples_per_epoch=512, batch_size=64, combination_share=0.0, modality_dropout=0.0,
                           corpus_shares={"textfix": 1.0}, patience=25)
    result = train_head(train, train, LABELS, HeadConfig(d_model=64, dropout=0.1), options)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.7, losses
    probs, weights = predict_table(result.model, test)
    accuracy = float(np.mean(np.array(LABELS)[probs.argmax(1)] == test.labels))
    assert accuracy >= 0.5, f"held-out accuracy {accuracy:.2f} (chance is 0.17)"
    assert np.allclose(weights[:, 3], 1.0)  # text is the only present token
    path = save_head(result.model, tmp_path, {"labels": list(LABELS), "modalities": list(MODALITIES), "dims": RAW_TOKEN_DIMS}, test)
    record = json.loads((tmp_path / "fusion_head.json").read_text())
    assert record["parity"]["max_abs_diff"] <= record["parity"]["tolerance"]
    from ecmf_edge.runtime.sessions import create_session

    head = FusionHead(create_session(path), {"attributes": {"modalities": list(MODALITIES), "dims": RAW_TOKEN_DIMS}}, LABELS)
    fused = head.predict({"text": test.features["text"][0]})
    assert fused.modality_weights == {"text": pytest.approx(1.0)}
    assert np.allclose(fused.probabilities, probs[0], atol=1e-4)


def test_fusion_runtime_rejects_bad_input(tmp_path, text_table):
    model = build_head(HeadConfig(d_model=32))
    path = save_head(model, tmp_path, {"labels": list(LABELS)}, text_table)
    from ecmf_edge.runtime.sessions import create_session

    head = FusionHead(create_session(path), {"attributes": {"modalities": list(MODALITIES), "dims": RAW_TOKEN_DIMS}}, LABELS)
    with pytest.raises(InputError, match="no modality present"):
        head.predict({})
    with pytest.raises(InputError, match="text feature has 384 values, the fusion head expects 768"):
        head.predict({"text": np.zeros(384)})
    with pytest.raises(InputError, match="unknown modality"):
        head.predict({"smell": np.zeros(3)})
    with pytest.raises(InputError, match="NaN or Inf"):
        head.predict({"face": np.full(128, np.nan)})


def test_refinement_relabels_only_when_sources_agree():
    rng = np.random.default_rng(0)
    n_per, dim = 60, 128
    centers = rng.standard_normal((2, dim)) * 3
    face = np.concatenate([centers[0] + rng.standard_normal((n_per, dim)), centers[1] + rng.standard_normal((n_per, dim))]).astype(np.float32)
    truth = ["happy"] * n_per + ["sad"] * n_per
    noisy = list(truth)
    flipped = [3, 10, 70, 95]
    for i in flipped:
        noisy[i] = "sad" if truth[i] == "happy" else "happy"
    feats = {m: np.zeros((2 * n_per, RAW_TOKEN_DIMS[m]), np.float32) for m in MODALITIES}
    feats["face"] = face
    mask = np.zeros((2 * n_per, 4), np.float32)
    mask[:, 1] = 1
    table = _table(feats, mask, noisy, "faces")
    teacher = np.zeros((2 * n_per, 7), np.float32)  # FER order: angry disgust fear happy sad surprise neutral
    teacher[np.array(truth) == "happy", 3] = 0.95
    teacher[np.array(truth) == "sad", 4] = 0.95
    teacher[:, 6] = 0.05
    table.face_probs = teacher
    result = refine_labels(table, LABELS, RefineOptions(folds=4))
    changed = np.flatnonzero(result.targets.argmax(1) != np.array([LABELS.index(l) for l in noisy]))
    assert set(changed) == set(flipped)
    assert result.changed_hard + result.changed_soft == len(flipped)
    # without the teacher there is a single source: nothing changes
    table.face_probs = np.zeros_like(teacher)
    assert refine_labels(table, LABELS, RefineOptions(folds=4)).changed_hard == 0
