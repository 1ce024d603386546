"""Dataset adapters on small layouts that mimic each corpus, and person-independent splits."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import write_wav

from ecmf_edge.errors import InputError
from ecmf_edge.train.datasets.base import group_split
from ecmf_edge.train.datasets.images import read_ckplus, read_faces_wild, read_fer2013, read_label_folders, wild_person
from ecmf_edge.train.datasets.meld import read_meld
from ecmf_edge.train.datasets.speech import read_cremad, read_emodb, read_ravdess
from ecmf_edge.train.datasets.tabular import read_manifest, read_mer2025


def _touch_wav(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, np.zeros(1600), 16000)
    return path


def test_ravdess_names_labels_and_actor_filter(tmp_path):
    for name in ["03-01-01-01-01-01-01.wav", "03-01-02-01-01-01-01.wav", "03-01-06-02-02-01-02.wav",
                 "03-01-07-01-01-01-02.wav", "03-01-05-01-01-01-20.wav", "01-01-03-01-01-01-02.mp4", "notes.txt"]:
        target = tmp_path / f"Actor_{name[-6:-4]}" / name
        _touch_wav(target) if name.endswith(".wav") else (target.parent.mkdir(parents=True, exist_ok=True), target.write_bytes(b"x"))
    samples = read_ravdess(tmp_path, actors=set(range(1, 19)))
    by_name = {s.id.split("/")[-1]: s for s in samples}
    assert by_name["03-01-01-01-01-01-01.wav"].label == "neutral"
    assert by_name["03-01-02-01-01-01-01.wav"].label == "neutral"  # calm -> neutral
    assert by_name["03-01-06-02-02-01-02.wav"].label == "worried"  # fearful -> worried
    assert "03-01-07-01-01-01-02.wav" not in by_name  # disgust dropped
    assert "03-01-05-01-01-01-20.wav" not in by_name  # actor 20 is outside the subset
    video = by_name["01-01-03-01-01-01-02.mp4"]
    assert video.label == "happy" and video.video is not None and video.group == "ravdess:02"
    assert all(s.video is None for s in read_ravdess(tmp_path, audio_only=True))


def test_emodb_and_cremad(tmp_path):
    for name in ["03a01Fa.wav", "03a01Wb.wav", "08b02Lc.wav", "15a01Na.wav"]:
        _touch_wav(tmp_path / "emodb" / name)
    emodb = read_emodb(tmp_path / "emodb", speakers={"03", "08"})
    assert sorted((s.source_label, s.label) for s in emodb) == [("anger", "angry"), ("happiness", "happy")]
    for name in ["1001_DFA_ANG_XX.wav", "1002_IEO_FEA_HI.wav", "1003_TIE_DIS_LO.wav"]:
        _touch_wav(tmp_path / "cremad" / "AudioWAV" / name)
    (tmp_path / "cremad" / "VideoFlash").mkdir()
    (tmp_path / "cremad" / "VideoFlash" / "1001_DFA_ANG_XX.flv").write_bytes(b"x")
    cremad = read_cremad(tmp_path / "cremad")
    assert [(s.label, s.group, s.video is not None) for s in cremad] == [("angry", "cremad:1001", True), ("worried", "cremad:1002", False)]


def test_fer_and_ckplus_folders(tmp_path, astronaut_bgr):
    import cv2

    def img(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.resize(astronaut_bgr, (48, 48)))

    img(tmp_path / "fer" / "train" / "happy" / "Training_1.jpg")
    img(tmp_path / "fer" / "train" / "happy" / "Training_1.jpg0.jpg")  # augmented copy: never read
    img(tmp_path / "fer" / "train" / "disgust" / "Training_2.jpg")
    img(tmp_path / "fer" / "train" / "fear" / "PrivateTest_3.jpg")  # reserved: never read
    img(tmp_path / "fer" / "publictest" / "fear" / "PublicTest_4.jpg")
    train = read_fer2013(tmp_path / "fer", "train")
    assert [(s.label, s.image.name) for s in train] == [("happy", "Training_1.jpg")]
    assert [s.label for s in read_fer2013(tmp_path / "fer", "publictest")] == ["worried"]
    with pytest.raises(InputError, match="PrivateTest is reserved"):
        read_fer2013(tmp_path / "fer", "privatetest")
    img(tmp_path / "ck" / "happy" / "S010_006_00000013.png")
    img(tmp_path / "ck" / "anger" / "S011_004_00000020.png")
    img(tmp_path / "ck" / "contempt" / "S012_001_00000001.png")
    ck = read_ckplus(tmp_path / "ck", exclude_subjects={"S011"})
    assert [(s.label, s.group) for s in ck] == [("happy", "ckplus:S010")]
    with pytest.raises(InputError, match="label 'grumpy' is not in the 'fer2013' table"):
        img(tmp_path / "odd" / "grumpy" / "a.jpg")
        read_label_folders(tmp_path / "odd", "fer2013", "odd")


def test_faces_wild_legend_people_and_split(tmp_path, astronaut_bgr):
    import cv2

    from ecmf_edge.cli.common import CORPORA
    from ecmf_edge.train.datasets.corpora import CorpusPaths, faces_wild_split

    assert set(CORPORA) == set(CorpusPaths.__dataclass_fields__)
    root = tmp_path / "wild"
    (root / "images").mkdir(parents=True)
    (root / "data").mkdir()
    names = ["George_W_Bush_0001.jpg", "George_W_Bush_0002.jpg", "HrithikRoshan_105.jpg", "Ann_Lee_0001.jpg",
             "Ann_Lee_0002.jpg"]
    for name in names[:-1]:  # the last one is listed but missing: skipped
        cv2.imwrite(str(root / "images" / name), astronaut_bgr)
    (root / "data" / "legend.csv").write_text(
        "user.id,image,emotion\n1,George_W_Bush_0001.jpg,NEUTRAL\n1,George_W_Bush_0002.jpg,happiness\n"
        "2,HrithikRoshan_105.jpg,Sadness\n2,Ann_Lee_0001.jpg,disgust\n2,George_W_Bush_0001.jpg,anger\n"
        "3,Ann_Lee_0002.jpg,fear\n", encoding="utf-8")
    samples = read_faces_wild(root)
    # labels lower-cased and mapped; disgust dropped; an image listed twice keeps its first label
    assert [(s.image.name, s.label, s.group) for s in samples] == [
        ("George_W_Bush_0001.jpg", "neutral", "faces_wild:George_W_Bush"),
        ("George_W_Bush_0002.jpg", "happy", "faces_wild:George_W_Bush"),
        ("HrithikRoshan_105.jpg", "sad", "faces_wild:HrithikRoshan")]
    assert [s.label for s in read_faces_wild(root, overrides={"disgust": "disgust"})][-1] == "disgust"
    assert wild_person("Jean_Chretien_0055.jpg") == "Jean_Chretien"
    train, test = faces_wild_split(samples)
    assert not {s.group for s in train} & {s.group for s in test}
    (root / "data" / "legend.csv").unlink()
    with pytest.raises(InputError, match="legend.csv is missing"):
        read_faces_wild(root)


def test_meld_mer2025_and_manifest(tmp_path):
    (tmp_path / "meld").mkdir()
    (tmp_path / "meld" / "train_sent_emo.csv").write_text(
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
        "1,\"Oh my God, he\u2019s lost it.\",Phoebe,sadness,negative,0,0\n2,Ew.,Ross,disgust,negative,0,1\n"
        "3,We won!,Joey,joy,positive,1,0\n", encoding="utf-8")
    meld = read_meld(tmp_path / "meld", "train")
    assert [(u.label, u.dialogue_id) for u in meld] == [("sad", 0), ("happy", 1)] and meld[0].text == "Oh my God, he's lost it."
    with pytest.raises(InputError, match="test split is reserved"):
        read_meld(tmp_path / "meld", "test")
    mer = tmp_path / "mer"
    (mer / "video").mkdir(parents=True)
    (mer / "video" / "sample_1.mp4").write_bytes(b"x")
    _touch_wav(mer / "audio" / "sample_2.wav")
    (mer / "label-disdim.csv").write_text("name,discrete,valence\nsample_1,worried,-1.2\nsample_2,happy,2.0\nsample_3,sad,-2\n")
    (mer / "subtitle_chieng.csv").write_text("name,chinese,english\nsample_1,\u4f60\u597d,I am scared\nsample_3,x,So sad\n", encoding="utf-8")
    samples = {s.id: s for s in read_mer2025(mer)}
    assert samples["mer2025:sample_1"].video is not None and samples["mer2025:sample_1"].text == "I am scared"
    assert samples["mer2025:sample_2"].audio is not None and samples["mer2025:sample_2"].text is None
    assert samples["mer2025:sample_3"].text == "So sad" and samples["mer2025:sample_3"].label == "sad"
    _touch_wav(tmp_path / "clips" / "a.wav")
    (tmp_path / "clips" / "m.csv").write_text("label,audio,text,group\nangry,a.wav,,p1\nfear,,I am afraid,p2\n")
    rows = read_manifest(tmp_path / "clips" / "m.csv", dataset="fer2013")
    assert [(s.label, s.group) for s in rows] == [("angry", "m:p1"), ("worried", "m:p2")]
    (tmp_path / "clips" / "bad.csv").write_text("label,audio\nangry,missing.wav\n")
    with pytest.raises(InputError, match="audio file .*missing.wav does not exist"):
        read_manifest(tmp_path / "clips" / "bad.csv")


def test_group_split_never_leaks_a_person(tmp_path):
    from ecmf_edge.train.datasets.base import Sample

    samples = [Sample(f"c:{p}:{i}", "c", f"c:{p}", "happy", "happy") for p in range(30) for i in range(5)]
    train, test = group_split(samples, test_fraction=0.2, seed=3)
    assert {s.group for s in train}.isdisjoint({s.group for s in test})
    assert 0.05 < len(test) / len(samples) < 0.45
    train2, test2 = group_split(samples, test_groups=["c:1", "c:2"])
    assert {s.group for s in test2} == {"c:1", "c:2"} and len(train2) == 140
