#!/usr/bin/env bash
# Train the same model with the same steps and seed on 10 points, 50 points and dense masks,
# then print a Markdown table of validation mIoU. Usage:
#   training/experiments/compare_supervision.sh OUT_DIR [train.py options: data, model, steps ...]
set -euo pipefail
out=$1; shift
mkdir -p "$out"
for setting in "--points-per-class 10 --plain" "--points-per-class 50 --plain" "--dense"; do
  name=$(echo "$setting" | tr -d '-' | tr ' ' '_')
  echo "== $setting" >&2
  geoseg train "$@" $setting --out "$out/$name" --no-progress --overwrite >&2
done
python - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print("| labels | best val mIoU % | pixel acc. % | per-class IoU % |")
print("| --- | --- | --- | --- |")
for name, label in [("pointsperclass_10_plain", "10 points / class"), ("pointsperclass_50_plain", "50 points / class"), ("dense", "dense masks")]:
    epochs = json.loads((out / name / "metrics.json").read_text())["epochs"]
    best = max(epochs, key=lambda r: r["val_miou"])
    ious = ", ".join(f"{k} {100 * v:.1f}" for k, v in best["val_iou"].items() if v is not None)
    print(f"| {label} | {100 * best['val_miou']:.2f} | {100 * best['val_pixel_accuracy']:.2f} | {ious} |")
PY
