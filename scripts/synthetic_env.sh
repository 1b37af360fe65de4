# Sourced by train_v2.sh and run_ablation.sh: with SYNTHETIC=1, write a synthetic MERBench-format
# tree to ./runs/synthetic and point the data variables at it.
if [[ "${SYNTHETIC:-0}" == "1" ]]; then
  python -m armer.synthetic runs/synthetic
  export FEATURES_ROOT="runs/synthetic/features" LABEL_PATH="runs/synthetic/label-6way.npz"
  export AUDIO_FEATURE="synth-audio-UTT" TEXT_FEATURE="synth-text-UTT" VIDEO_FEATURE="synth-video-UTT"
fi
