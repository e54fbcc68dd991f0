#!/usr/bin/env bash
# The GPU check: one command on a GPU machine reached only briefly (docs/gpu.md says how to
# get the code, its Python packages and the data there). Writes benchmarks/results/<gpu>.md
# (and a copy to $OUT when that is set):
#   1. speed, on synthetic images of the real shape: the seven reference models at
#      their own batch size and at 1024, images/s of the plain PyTorch loop, of cnnbench
#      eager and of cnnbench with its whole-step CUDA graph, with peak GPU memory;
#   2. the whole default pipeline (benchmarks/pipeline_time.py) with tracking on (SQLite), when
#      the prepared data of every dataset is in data/; otherwise the file says it was not run.
#
#   bash benchmarks/gpu_check.sh                  both parts (sized for 9 minutes on one H100;
#                                                 not yet timed on a GPU)
#   bash benchmarks/gpu_check.sh speed|pipeline   one of them
#   bash benchmarks/gpu_check.sh --tiny           a dry run at tiny sizes (minutes on a CPU)
#   bash benchmarks/gpu_check.sh receive          install and unpack what benchmarks/gpu_carry.sh
#                                                 packed, as its pieces arrive (one call each)
set -euo pipefail
cd "$(dirname "$0")/.."
part=all tiny=false
for arg in "$@"; do
  case $arg in
    --tiny) tiny=true ;;
    speed|pipeline|all|receive) part=$arg ;;
    *) echo "usage: $0 [speed|pipeline|all|receive] [--tiny]" >&2; exit 2 ;;
  esac
done

# packages carried as wheels (benchmarks/gpu_carry.sh) live in .site/, beside the code
export PYTHONPATH=$PWD/src:$PWD/.site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ "$part" = receive ]; then
  if [ -d .carry/wheels ] && [ ! -f .site/installed ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target .site .carry/wheels/*.whl
    touch .site/installed
    echo "installed $(ls .carry/wheels | wc -l) wheels into .site/"
  fi
  pieces=(.carry/data.tgz.*)
  if [ -e "${pieces[0]}" ]; then
    # the pieces are complete when they make a whole gzip stream
    if cat "${pieces[@]}" | gzip -t 2>/dev/null; then
      cat "${pieces[@]}" | tar -xz && md5sum --quiet -c .carry/data.md5 && rm -f "${pieces[@]}"
      echo "data unpacked and checked: $(ls data | tr '\n' ' ')"
    else
      echo "data: ${#pieces[@]} piece(s) here, more to come"
    fi
  fi
  exit 0
fi
# The GPU machine's image has python3 alone, and dvc and mlflow come as wheels unpacked
# without their commands: stand-ins for `python` and `dvc` where they are missing.
shims=$(mktemp -d)
command -v python >/dev/null || ln -s "$(command -v python3)" "$shims/python"
command -v dvc >/dev/null || printf '#!/bin/sh\nexec python -m dvc "$@"\n' >"$shims/dvc"
chmod +x "$shims"/* 2>/dev/null || true
export PATH=$shims:$PATH
# DVC needs a git repository, and the machine receives the working tree without .git
if [ ! -d .git ]; then
  git init -q && git add -A && git -c user.name=check -c user.email=check@localhost commit -qm "working tree"
fi

gpu=$(python -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')
slug=$(echo "$gpu" | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')
if $tiny; then
  result=benchmarks/results/gpu-check-dry-run-$slug.md
  models="seed001_mnist cifar_base" batches="model 256" images=512 warmup=0
  pipeline_args=(--tiny --models seed001_mnist mnist_7k)
else
  result=benchmarks/results/$slug.md
  models="seed001_mnist seed002_mnist seed000_sep seed001_sep seed003_sep seed004_sep cifar_base"
  batches="model 1024" images=8192 warmup=1
  pipeline_args=()
fi
work=$(mktemp -d)
start=$SECONDS

if [ "$part" != pipeline ]; then
  # one trial per variant: this check measures ratios of several x, not percents
  python benchmarks/throughput.py --models $models --batch $batches --variants reference eager cnnbench \
    --images "$images" --warmup-epochs "$warmup" --trials 1 --out "$work/speed.md"
fi
speed_s=$((SECONDS - start))

if [ "$part" != speed ]; then
  # data not here (or the run failing) is said in the report, after the speed rows
  if ! python benchmarks/pipeline_time.py "${pipeline_args[@]}" --out "$work/pipeline.md" 2>"$work/why"; then
    echo "Not run to the end: $(tail -n 1 "$work/why") (docs/gpu.md: bringing the data)" >"$work/pipeline.md"
  fi
fi

{
  echo "# GPU check on $gpu"
  echo
  echo "\`${CNNBENCH_JOBS:+CNNBENCH_JOBS=$CNNBENCH_JOBS }bash benchmarks/gpu_check.sh $*\` at commit $(git rev-parse --short HEAD), $((SECONDS - start)) s in all."
  if $tiny; then
    echo
    echo "A dry run at tiny sizes: it shows that every part runs and what the report holds; its"
    echo "figures say nothing about speed."
  fi
  if [ -f "$work/speed.md" ]; then
    echo
    echo "## Training speed ($speed_s s)"
    echo
    echo "Images/s of one timed epoch after $warmup untimed one(s), synthetic images of the real"
    echo "shape (speed does not depend on the pixels); reference: the plain PyTorch loop"
    echo "(DataLoader, eager fp32); eager: cnnbench with CNNBENCH_CUDA_GRAPHS=off; cnnbench: as the"
    echo "pipeline trains (whole-step CUDA graph on a GPU). Plain layer defaults: with Keras's, a"
    echo "reference model's first 2,000 steps run eagerly (its BatchNorm momentum changes every step)."
    echo
    cat "$work/speed.md"
  fi
  if [ -f "$work/pipeline.md" ]; then
    echo
    echo "## The whole default pipeline"
    echo
    cat "$work/pipeline.md"
  fi
} >"$result"
rm -rf "$work" "$shims"
cat "$result"
if [ -n "${OUT:-}" ]; then cp "$result" "$OUT/"; fi
