#!/usr/bin/env bash
# Re-runs the sweeps behind experiments/results/mnist and experiments/results/cifar10 (the
# paper's Table 1 and Figure 4 at CPU scale, `--preset=sweep`) and refreshes the committed
# copies and reports.
#
#   bash experiments/reproduce_table1.sh
#   SWEEPS=/big/disk DATA=/datasets RESULTS=/elsewhere bash experiments/reproduce_table1.sh
#
# Run folders live in $SWEEPS (default ../sweeps, outside the work tree). Each target is one
# `scas sweep` call: an interrupted target resumes, one another process holds is skipped, and a
# finished one is skipped before any Python starts. Targets already in $RESULTS count as
# finished: their small files seed the run folder, so a clean clone runs only what is not
# committed. After each target, its small files are copied into $RESULTS and the dataset's
# report is redone, so stopping the script at any point loses no finished target.
# Targets run in an order that makes a partial run useful: the ends of the range first, and the
# targets issue 13 asks for on both datasets before the rest of the paper's ten.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's code, installed or not
SWEEPS=${SWEEPS:-../sweeps}
DATA=${DATA:-../shared/data}
RESULTS=${RESULTS:-experiments/results}
MNIST_FIRST_TARGETS="0.9 0 0.5 0.8"
CIFAR10_TARGETS="0.9 0 0.5 0.8"
MNIST_LATER_TARGETS="0.7 0.3 0.6 0.4 0.2 0.1"

seed_sweep() {  # committed sweep folder, run folder: copies what the run folder lacks
  local committed=$1 sweep=$2 path
  [[ -d $committed ]] || return 0
  (cd "$committed" && find . -type f) | while read -r path; do
    [[ -e $sweep/$path ]] || install -D -m 644 "$committed/$path" "$sweep/$path"
  done
}

sweep_target() {  # dataset method target [extra scas flags]
  local dataset=$1 method=$2 target=$3
  shift 3
  seed_sweep "$RESULTS/$dataset/$method" "$SWEEPS/$method-$dataset"
  # Three TensorFlow starts (sweep, collect, report) per finished target made a restart
  # spend ~30 s on each before reaching the first unfinished one.
  if [[ -e $SWEEPS/$method-$dataset/s$target/results.json ]]; then
    echo "$dataset $method $target: finished"
    return 0
  fi
  python -m scas_tf sweep --method="$method" --preset=sweep --dataset="$dataset" --data_dir="$DATA" \
    --targets="$target" --output_dir="$SWEEPS/$method-$dataset" "$@"
  python experiments/collect_results.py "$SWEEPS/$method-$dataset" "$RESULTS/$dataset/$method"
  python -m scas_tf report "$RESULTS/$dataset" --output="$RESULTS/$dataset/report"
}

mnist_sweeps() {  # targets
  local target method
  for target in "$@"; do
    for method in enas_macro enas_micro darts smash; do sweep_target mnist "$method" "$target"; done
  done
}

mnist_sweeps $MNIST_FIRST_TARGETS
# The CIFAR-10 copy beside the checkout has 10,000 training images (data_batch_1), JPEG-derived.
# Eight final epochs on its 9,000 training images cost about what two on MNIST's 54,000 do.
for target in $CIFAR10_TARGETS; do
  for method in enas_micro darts; do
    sweep_target cifar10 "$method" "$target" --allow_partial_data --final_epochs=8
  done
done
mnist_sweeps $MNIST_LATER_TARGETS
