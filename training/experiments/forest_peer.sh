#!/usr/bin/env bash
# GeoSeg against the forest peer on dubai-aerial, 10 points per class and photo, both settings:
#   cross: trained on the points of tiles 1-4, scored on the masks of tiles 5-6;
#   same:  trained on the points of tiles 5-6, scored on the masks of tiles 5-6.
# Per seed and setting: GeoSeg with forest labels (--expand forest --expand-weight 1, the
# default) and the network with the forest peer averaged in (training.experiments.combine on the
# finished run; it also scores the forest peer alone on the run's points, as geoseg peer-forest).
# Usage: training/experiments/forest_peer.sh DUBAI_DIR OUT_DIR [SEEDS...]   (default seeds: 0 1 2)
# EXTRA="--forest-segments 100" adds training options to every run.
set -euo pipefail
dubai=$1; out=$2; shift 2
seeds=${*:-0 1 2}
table=training/tables/dubai-aerial.json
data="--data $dubai --dataset folders --classes $table --scale 0.5 --points-per-class 10"
recipe="--arch deeplabv3_mobilenet_v3_large --epochs 8 --steps-per-epoch 50 --batch-size 8
        --lr 1e-3 --threads 1 --crop-size 256 --no-progress --overwrite"
for seed in $seeds; do
  for setting in cross same; do
    if [ "$setting" = cross ]; then dirs="--train-dirs tile1 tile2 tile3 tile4 --val-dirs tile5 tile6"
    else dirs="--train-dirs tile5 tile6 --val-dirs tile5 tile6"; fi
    run="$out/$setting-forest-labels-s$seed"
    python -m training.train $data $dirs $recipe --expand forest --expand-weight 1.0 \
        ${EXTRA:-} --seed "$seed" --out "$run"
    python -m training.experiments.combine "$run" --classes "$table"
  done
done
