"""The model card (checkpoints/README.md) of the demo checkpoint, written by run_experiments.py."""
from __future__ import annotations

from arms import arms_line  # scripts/arms.py


def model_card(meta: dict, agg: dict, best_seed: int, best_val: float, results_md: str) -> str:
    ex = meta["extractors"]
    views = f" (probability {meta['degraded_views']} per modality and step)" if meta.get("degraded_views") else ""
    src = meta.get("manifest_sources", {})
    main = results_md.split("## Main table (weighted F1 / accuracy)", 1)[-1].split("## Mean fusion weight", 1)[0]
    weights = results_md.split("## Mean fusion weight per modality, all modalities present", 1)[-1].split(
        "## Uncertainty versus errors", 1)[0]
    return f"""# ARMER demo checkpoint: AttentionRobustV2 on the paired emotion benchmark

`model.safetensors` + `config.json` in this folder: an ensemble of {meta['num_folds']} fold models of
AttentionRobustV2 (`armer.checkpoint.load_checkpoint`), trained by `scripts/run_experiments.py` on the
paired EmoDB + FER2013 + MELD benchmark. Chosen among the V2 seeds {agg['v2']['seeds']} by **validation**
(mean best fold emoval = validation weighted F1: {best_val:.4f}, seed {best_seed}), never by test results.

## Inputs: the offline extractors

| modality | extractor (`config.json` `extractors`) | input |
|---|---|---|
| audio | `{ex['audio']}` | 16 kHz mono speech |
| text | `{ex['text']}` | the transcript (English) |
| video | `{ex['video']}` | face crops (48x48 grayscale inside the backend) |

`python app.py` loads exactly these backends (`extractors.create_extractor`).

Classes (in order): neutral, angry, happy, sad, fear, disgust. No valence head is trained (the
benchmark has no valence labels).

## Data and its terms

- **EmoDB** (Berlin Database of Emotional Speech): German acted speech, 10 actors; free for research use.
- **FER2013**: 48x48 grayscale faces from the Kaggle challenge; research use.
- **MELD**: English utterances from the TV series *Friends*; GPL-3.0.

None of the data is in this repository; the weights are derived from it, so use them for research
under the same terms.

## The pairing

No public corpus we can obtain pairs audio, text and video of the same utterance. As in AV-MNIST,
each EmoDB clip of the six shared classes is paired with a random FER2013 face and a random MELD
utterance **of the same class and split** (8 pairings per training clip, 4 per test clip).
Splits: EmoDB by speaker (test speakers {src.get('test_speakers')}, training speakers
{src.get('train_speakers')}), FER2013 `Training` -> train and other usages -> test, MELD
`train` -> train and other CSV files -> test. Training faces: {(src.get('train_faces') or {}).get('pool', 'every Training image')},
each training speaker with its own share of them and of the MELD `train` dialogues. The noise
corpus degrades the raw test inputs: speech + white noise at 5-10 dB SNR, faces blurred by
down/up-sampling x2 or x4, 30 % of the words dropped.
Training also sees degraded views of its own inputs: one degraded copy of each training item, from
wider ranges (-5 to 10 dB SNR, blur x2-x6, 10-50 % word drop-out), swapped in for a modality at
random{views}; the test corpora are never used in training.

## Reproduce

```
{meta['command']}
```

which runs `{meta['build_command']}` and, per arm and seed, `{meta['train_command']}`
with the arm's flags in place of `--model attention_robust_v2` ({meta['epochs']} epochs,
{meta['num_folds']}-fold CV). The feature cache lives in `~/.cache/armer/benchmark-features` (outside
the repository).

## Results (mean ± std over the seeds, percent)

V1 is the `attention_robust` baseline; the seed recipe, where run, is AttentionRobustV2 trained the
seed author's way (docs/training.md, "Recipes"); this checkpoint is a V2 seed. The arms:
{arms_line(agg)}.
{main}
### Mean fusion weights
{weights}
Full tables, uncertainty quality and ablations: `results/benchmark.md`.

## Limitations

- **Paired by class, not by utterance**: the three modalities of a sample come from different people
  and recordings; the model learns class evidence per modality, not how one person's voice, face and
  words go together. Real clips in the demo are a different distribution.
- **Acted speech**: EmoDB actors read neutral sentences in an acted emotion; spontaneous speech is harder.
- **German speech, English text**: the audio is German (EmoDB), the text English (MELD dialogue).
- **Small**: {len(src.get('train_speakers') or [])} training speakers; the test speakers are 2 people; results
  have wide confidence intervals.
- **Faces**: FER2013 crops are 48x48 grayscale, tightly cropped and in the wild; the demo's face
  detector and colour video differ.
- Six classes only (EmoDB boredom, FER/MELD surprise are not covered).
"""
