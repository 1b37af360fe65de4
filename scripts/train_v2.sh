#!/usr/bin/env bash
# One AttentionRobustV2 training run with MERBench's protocol (5-fold CV, every test corpus scored).
#
# Environment variables (defaults in brackets):
#   FEATURES_ROOT  folder of MERBench feature folders          [./dataset/features]
#   LABEL_PATH     label-6way.npz-style label file             [./dataset/label-6way.npz]
#   AUDIO_FEATURE  audio feature folder                        [chinese-hubert-large-UTT]
#   TEXT_FEATURE   text feature folder                         [Baichuan-13B-Base-UTT]
#   VIDEO_FEATURE  video feature folder                        [clip-vit-large-patch14-UTT]
#   SAVE_ROOT      output folder                               [./runs/attention_robust_v2-seed$SEED]
#   SEED           random seed                                 [0]
#   EPOCHS         epochs                                      [100]
#   MODEL          attention_robust_v2 or attention_robust     [attention_robust_v2]
#   SYNTHETIC=1    first write a synthetic MERBench-format tree to ./runs/synthetic and train on it
# Extra arguments are passed to `python -m armer.train` (e.g. --no-use_vae --fusion_temperature 0.5).
set -euo pipefail
cd "$(dirname "$0")/.."

SEED="${SEED:-0}"
MODEL="${MODEL:-attention_robust_v2}"
source scripts/synthetic_env.sh
FEATURES_ROOT="${FEATURES_ROOT:-./dataset/features}"
LABEL_PATH="${LABEL_PATH:-./dataset/label-6way.npz}"
if [[ ! -d "$FEATURES_ROOT" || ! -f "$LABEL_PATH" ]]; then
  echo "error: FEATURES_ROOT=$FEATURES_ROOT or LABEL_PATH=$LABEL_PATH not found." >&2
  echo "Set them to your MERBench features and label file, or run with SYNTHETIC=1 to try it on generated data." >&2
  exit 2
fi

python -m armer.train \
  --model "$MODEL" \
  --features_root "$FEATURES_ROOT" \
  --label_path "$LABEL_PATH" \
  --audio_feature "${AUDIO_FEATURE:-chinese-hubert-large-UTT}" \
  --text_feature "${TEXT_FEATURE:-Baichuan-13B-Base-UTT}" \
  --video_feature "${VIDEO_FEATURE:-clip-vit-large-patch14-UTT}" \
  --save_root "${SAVE_ROOT:-./runs/$MODEL-seed$SEED}" \
  --seed "$SEED" \
  --epochs "${EPOCHS:-100}" \
  "$@"
