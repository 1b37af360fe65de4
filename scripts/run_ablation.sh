#!/usr/bin/env bash
# Ablations: V1, the seed author's recipe (--recipe seed, docs/training.md), V2 full, V2 without
# VAE / proxy attention / modality dropout / reconstruction / cross-modal KL / expert fusion /
# degraded training views, V2 at two other fusion temperatures and with ten times the cross-modal KL
# weight, and with three times the calibration weight. Same data, seed and epochs for every run;
# one Markdown table at the end (also written to $ABLATION_ROOT/ablation.md), validation and test
# columns.
#
# Environment variables: the data variables of scripts/train_v2.sh (FEATURES_ROOT, LABEL_PATH,
# AUDIO_FEATURE, TEXT_FEATURE, VIDEO_FEATURE, SEED, EPOCHS, SYNTHETIC=1), and
#   ABLATION_ROOT  output folder                               [./runs/ablation-seed$SEED]
# Extra arguments are passed to every run, before the ablation's own flags (which win).
set -euo pipefail
cd "$(dirname "$0")/.."
SEED="${SEED:-0}"
ABLATION_ROOT="${ABLATION_ROOT:-./runs/ablation-seed$SEED}"
source scripts/synthetic_env.sh

declare -A RUNS=(
  [v1]="--model attention_robust"
  [seed]="--recipe seed"
  [v2]=""
  [v2_no_vae]="--no-use_vae"
  [v2_no_proxy_attention]="--no-use_proxy_attention"
  [v2_no_modality_dropout]="--modality_dropout 0"
  [v2_no_recon]="--recon_weight 0"
  [v2_no_cross_kl]="--cross_kl_weight 0"
  [v2_temperature_0.5]="--fusion_temperature 0.5"
  [v2_temperature_2.0]="--fusion_temperature 2.0"
  [v2_no_expert_fusion]="--no-expert_fusion"
  [v2_cross_kl_0.1]="--cross_kl_weight 0.1"
  [v2_no_degraded_views]="--degraded_views 0"
  [v2_calibration_0.3]="--calibration_weight 0.3"
)
ORDER=(v1 seed v2 v2_no_vae v2_no_proxy_attention v2_no_modality_dropout v2_no_recon v2_no_cross_kl v2_temperature_0.5
       v2_temperature_2.0 v2_no_expert_fusion v2_cross_kl_0.1 v2_no_degraded_views v2_calibration_0.3)
for name in "${ORDER[@]}"; do
  echo "=== $name ===" >&2
  # shellcheck disable=SC2086
  SYNTHETIC=0 SAVE_ROOT="$ABLATION_ROOT/$name" MODEL=attention_robust_v2 bash scripts/train_v2.sh "$@" ${RUNS[$name]}
done
python -m armer.evaluate.report ablation "$ABLATION_ROOT" "${ORDER[@]}" | tee "$ABLATION_ROOT/ablation.md"
