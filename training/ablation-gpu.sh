#!/usr/bin/env bash
# The supervision ablation on one GPU, rows in parallel processes (the GPU is far from busy with
# one MobileNetV3 run): DATA is the dubai-aerial folder, OUT the result folder. Seconds per step
# are then measured with 5 runs sharing the GPU and 16 CPU cores.
set -uo pipefail
DATA=$1; OUT=$2; SECONDS_MAX=${3:-330}
COMMON="--data $DATA --dataset folders --classes training/tables/dubai-aerial.json \
  --train-dirs tile1 tile2 tile3 tile4 --val-dirs tile5 tile6 --epochs 8 --steps-per-epoch 50 \
  --batch-size 8 --lr 1e-3 --max-pictures 0 --superpixel-cache $OUT/superpixels"
MNV3="--arch deeplabv3_mobilenet_v3_large --scale 0.5 --crop-size 256 --threads 2"
R50="--arch deeplabv3_resnet50 --scale 1.0 --crop-size 512 --threads 2"
mkdir -p "$OUT"
run() { timeout "$SECONDS_MAX" python3 -m training.ablation "$@" > "$OUT/driver-$RANDOM.log" 2>&1; }
run "$OUT/mnv3" --rows p10 --seeds 0 1 2 -- $COMMON $MNV3 &
run "$OUT/mnv3" --rows p10-both --seeds 0 1 2 -- $COMMON $MNV3 &
run "$OUT/mnv3" --rows dense --seeds 0 1 2 -- $COMMON $MNV3 &
run "$OUT/mnv3" --rows p10-sp p10-crf p50 --seeds 0 -- $COMMON $MNV3 &
run "$OUT/r50" --rows p10 p10-both dense --seeds 0 -- $COMMON $R50 &
wait
