#!/usr/bin/env bash
# The point-layer path against the simulated-points path on the same photos, points and seed.
# Usage: training/experiments/compare_point_layer.sh DUBAI_DIR OUT_DIR [SEEDS...]   (default seed: 0)
#   1. training.points.simulated writes the dubai-aerial photos (scale 0.5) as UTM GeoTIFFs and the
#      10 points per class per photo that --points-per-class 10 simulates as a GeoPackage (EPSG:4326);
#   2. trains, per seed: the simulated path (--data), the point-layer path with --random-crops 1
#      (the same crops), and the point-layer path with its default crops;
#   3. prints the per-epoch table of dense mIoU on tiles 5-6 and of the held-out points' estimate.
set -euo pipefail
dubai=$1; out=$2; shift 2
seeds=${*:-0}
common="--arch deeplabv3_mobilenet_v3_large --epochs 8 --steps-per-epoch 50 --batch-size 8
        --lr 1e-3 --threads 1 --crop-size 256 --no-progress --overwrite --plain"
data="--data $dubai --dataset folders --classes training/tables/dubai-aerial.json
      --train-dirs tile1 tile2 tile3 tile4 --val-dirs tile5 tile6 --scale 0.5"
layer="$out/dubai-points-10.gpkg"
[ -f "$layer" ] || python -m training.points.simulated $data --points-per-class 10 --seed 0 \
    --out "$out/geo" --layer "$layer"
images="--images $out/geo/train --points $layer --classes training/tables/dubai-aerial.json
        --val-images $out/geo/val --val-masks $(ls "$out"/geo/val-masks/*.tif | tr '\n' ' ')"
for seed in $seeds; do
  python -m training.train $data --points-per-class 10 $common --seed "$seed" --out "$out/simulated-s$seed"
  python -m training.train $images --random-crops 1 $common --seed "$seed" --out "$out/layer-random-s$seed"
  python -m training.train $images $common --seed "$seed" --out "$out/layer-default-s$seed"
done
for seed in $seeds; do
  echo "## seed $seed"
  python -m training.points.report --simulated "$out/simulated-s$seed" \
      --layer "random crops=$out/layer-random-s$seed" "point crops=$out/layer-default-s$seed"
done
