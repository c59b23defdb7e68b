#!/usr/bin/env bash
# The benchmark-only environment: .bench-venv/ with cgtool (editable) and the tools users would pick
# instead (torchinfo, fvcore, TorchLens, torchview, torchvision's ResNet-18, transformers' GPT-2).
# None of these is a dependency of cgtool; they are installed here only. Pins: constraints.txt (torch)
# and benchmarks/peers-constraints.txt (the peers, and why torchvision is 0.28.0).
#     bash benchmarks/peers.sh            # make or refresh .bench-venv/ (about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=.bench-venv
STAMP=$VENV/.installed
if [[ -f $STAMP && $STAMP -nt benchmarks/peers-constraints.txt && $STAMP -nt constraints.txt && $STAMP -nt pyproject.toml ]]; then
    exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q -c constraints.txt -c benchmarks/peers-constraints.txt -e . \
    torchinfo fvcore torchlens torchview torchvision transformers
# torchvision's CUDA extension cannot load beside the CPU torch: check that its models import anyway
"$VENV/bin/python" -W ignore -c "
import sys; sys.path.insert(0, 'benchmarks')
import tvshim; tv = tvshim.import_torchvision(); tv.models.resnet18()
import torchinfo, fvcore.nn, torchlens, torchview, transformers
print('peers ready:', 'torchvision', tv.__version__, '(ops declared by benchmarks/tvshim.py)' if tvshim.SHIMMED else '')
"
touch "$STAMP"
