#!/usr/bin/env bash
# The supervision ablation on one GPU: every (row, seed) is its own training process, all at once
# (one MobileNetV3 run keeps an H100 far from busy; the runs share its 16 cores). DATA is the
# dubai-aerial folder, OUT the result folder, SECONDS_MAX the wall-clock limit of each run.
# RUNS lists SETUP:ROW:FIRST-LAST seed ranges; SETUP is mnv3 or r50 (dubai-aerial, as make
# compare-dubai) or syn (synthetic scenes, as make compare-synthetic, generated into OUT first);
# ROW one of training/experiments/ablation.py.
# Seconds per step are those of ~20 runs sharing the GPU and the cores: compare them only within
# one table. Afterwards `python -m training.experiments.ablation OUT/mnv3 --rows ... --seeds ... --report-only`
# writes the table from the runs' metrics.json.
set -uo pipefail
DATA=$1; OUT=$2; SECONDS_MAX=${3:-500}
RUNS=${RUNS:-"mnv3:p10:0-2 mnv3:p10-crf:0-2 mnv3:p10-crf0.01:0-2 mnv3:p10-crf0.05:0-2
  mnv3:p10-crf0.1:0-2 mnv3:dense:0-2 r50:p10:0-0 r50:p10-crf:0-0 r50:dense:0-0"}
STEPS="--epochs 8 --steps-per-epoch 50 --batch-size 8 --lr 1e-3 --max-pictures 0 --threads 1"
DUBAI="--data $DATA --dataset folders --classes training/tables/dubai-aerial.json \
  --train-dirs tile1 tile2 tile3 tile4 --val-dirs tile5 tile6 $STEPS"
declare -A SETUP=(
  [mnv3]="$DUBAI --arch deeplabv3_mobilenet_v3_large --scale 0.5 --crop-size 256"
  [r50]="$DUBAI --arch deeplabv3_resnet50 --scale 1.0 --crop-size 512"
  [syn]="--data $OUT/synthetic $STEPS --arch deeplabv3_mobilenet_v3_large --crop-size 192")
mkdir -p "$OUT/logs"
if [[ $RUNS == *syn:* && ! -f $OUT/synthetic/train.txt ]]; then
  python3 -m training.data.synthetic --out "$OUT/synthetic" --train 48 --val 12 --test 12 --size 256 \
    --seed 0 > "$OUT/logs/synthetic.log" 2>&1 || exit 1
fi
for spec in $RUNS; do
  IFS=: read -r arch row seeds <<< "$spec"  # arch: the setup
  for seed in $(seq "${seeds%-*}" "${seeds#*-}"); do
    timeout "$SECONDS_MAX" python3 -m training.experiments.ablation "$OUT/$arch" --rows "$row" --seeds "$seed" \
      -- ${SETUP[$arch]} > "$OUT/logs/$arch-$row-s$seed.log" 2>&1 &
  done
done
wait
