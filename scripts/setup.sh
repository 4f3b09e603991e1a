#!/usr/bin/env bash
# Create .venv in the repository root and install the project with its test extras.
# torch is pinned to 2.13.0 so this machine's local CPU wheel is used (no multi-GB CUDA packages).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
quiet_pip() { .venv/bin/pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
# Debian's Chromium and ChromeDriver, for the search page's browser test (skipped without them).
if [ ! -x /usr/bin/chromedriver ] && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
  apt_chromium() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver > /dev/null 2>&1; }
  apt_chromium || { apt-get update -qq > /dev/null 2>&1 && apt_chromium; } \
    || echo "setup: could not install Debian's chromium: the browser test will be skipped" >&2
fi
quiet_pip "torch==2.13.0"
quiet_pip -e ".[test]"
.venv/bin/python -c "import torch, ray, faiss, pyarrow, safetensors, transformers, pipeline; print('environment ready: torch', torch.__version__, '| ray', ray.__version__)"
