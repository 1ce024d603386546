"""Trained per-modality branches (``ecmf-edge train --branch face|speech|text``).

* :mod:`.face` — EfficientNet-Lite0 (ImageNet) fine-tuned on FER2013 Training + CK+ training subjects;
* :mod:`.speech` — Whisper middle-layer statistics + prosody, speaker-normalised
  (:mod:`.speaker_norm`), with a trained head (:mod:`.classifier`);
* :mod:`.text` — MiniLM with its top layers fine-tuned on MELD, reading the dialogue context.

:mod:`.run` connects them to the command line.
"""
