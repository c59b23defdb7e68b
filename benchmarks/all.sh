#!/usr/bin/env bash
# `make bench`: every benchmark in a row, one thread each; figures and method in BENCHMARKS.md.
#     bash benchmarks/all.sh                      # everything (about 15-20 minutes on 2 shared cores)
#     BENCH="forward paths_scaling" bash benchmarks/all.sh   # some of them
# The peers comparison (inspect_peers) runs in .bench-venv/, made by benchmarks/peers.sh on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=.venv/bin/python
ALL="run forward paths_scaling inspect_peers paths grad startup commands"
for b in ${BENCH:-$ALL}; do
    echo "== benchmarks/$b =="
    case $b in
        inspect_peers) bash benchmarks/peers.sh && .bench-venv/bin/python -W ignore benchmarks/inspect_peers.py ;;
        *) "$PY" "benchmarks/$b.py" ;;
    esac
    echo
done
