#!/usr/bin/env bash
# Installs the Python test dependencies into the venv whose python is $1: PyTorch and Hugging
# Face transformers (the performer.torch tests run against the real things, in CI too), numpy
# and pytest. Idempotent: a second run finds them and installs nothing.
#
# PyTorch: a CPU-only wheel when pip's find-links (e.g. /opt/wheels) holds one -- about 180 MB
# against PyPI's default Linux build with its CUDA libraries (several GB, minutes to unpack);
# otherwise PyPI's. Either way the tests run on the CPU.
set -euo pipefail
py="$1"
if "$py" -c "import torch, transformers, numpy, pytest" 2>/dev/null; then
    exit 0
fi
echo "== installing the test dependencies (torch, transformers) into the venv" >&2
if ! "$py" -c "import torch" 2>/dev/null; then
    # --no-index: only pip's find-links are searched; fails quietly when none holds torch.
    "$py" -m pip install -q --no-index --no-deps torch >/dev/null 2>&1 \
        && echo "   torch from a local wheel: $("$py" -c 'import torch; print(torch.__version__)')" >&2 \
        || echo "   no local torch wheel: installing torch from PyPI" >&2
fi
# With torch present this adds only its pure-Python dependencies and transformers.
"$py" -m pip install -q torch transformers numpy pytest >&2
"$py" -c "import torch, transformers; print('   torch', torch.__version__, '/ transformers', transformers.__version__)" >&2
