#!/usr/bin/env bash
# The main job: cgtool on the bundled configs and the lesson's expressions.
set -euo pipefail
cd "$(dirname "$0")/.."
export COLUMNS="${COLUMNS:-110}"
# Echo each command as it can be pasted back into a shell: words that need quotes get them.
quote() {
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./=:,@%+-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  printf '%s' "${out[*]}"
}
step() { printf '\n\033[1m$ %s\033[0m\n' "$(quote "$@")"; "$@"; }

# 1. The lesson's computational graph: dy/dw is the sum over the paths y->a->w and y->b->w.
step cgtool grad "a = x1 + w; b = x2 + w; y = a * b" --wrt w --at x1=1 --at x2=2 --at w=3
step cgtool grad "y = (x + w) * (w + 1)" --at x=2 --at w=1 --wrt w
# A name rebound is a new version of it (x#2); // has no derivative: a node with data edges only.
step cgtool grad "x = x * 2; y = x // 0.3 + x * w" --at x=1 --at w=2 --wrt x

# 2. Models from YAML specs: every config builds and passes its shape check.
for spec in configs/*.yaml; do
  case "$spec" in
    *llama7b.yaml) step cgtool build "$spec" --device meta --depth 2 ;;
    *) step cgtool build "$spec" --depth 2 ;;
  esac
done

# 3. FancyMLP: a constant weight, one layer reused, control flow on the data.
step cgtool build configs/fancy_mlp.yaml --code
step cgtool params configs/fancy_mlp.yaml
step cgtool summary configs/fancy_mlp.yaml
step cgtool run configs/fancy_mlp.yaml --seed 1

# 4. Gradient paths of a model: the shared layer has one path per call; a tied weight one per side;
#    ResNet-110's 2^54 paths counted by how many residual branches they pass through.
step cgtool paths configs/fancy_mlp.yaml --wrt linear.weight
step cgtool paths configs/tied_linear.yaml --all
step cgtool paths configs/resnet110.yaml --wrt stem.conv.weight --by-length --count 'stages.*.*.branch' --max-paths 1

# 5. Tied weights counted once (torchinfo 1.8.0 says 840), and a LLaMA-7B-shaped model on meta.
step cgtool params configs/tied_linear.yaml
step cgtool summary configs/llama7b.yaml --device meta --depth 1
step cgtool summary configs/gpt2_small.yaml --depth 1

# 6. Your turn: cgtool lives in .venv (make demo put it on PATH for this script only).
printf '\n\033[1mcgtool is installed in .venv. To use it in your shell, paste:\033[0m\n'
printf '  source .venv/bin/activate\n'
printf 'then, for example:  cgtool build configs/mlp.yaml   (or, without activating: .venv/bin/cgtool build configs/mlp.yaml)\n'
