"""The pipeline's gate: which scorer judges a fine-tune, and the score it must reach to be deployed.

One home for these defaults: the CLI, the Argo WorkflowTemplate values and the pipeline steps all
read them from here.
"""

from __future__ import annotations

DEFAULT_SCORER = "pixels"
# Gate thresholds when none is given. CLIP image similarity: the DreamBooth paper (Ruiz et al. 2023,
# table 1) reports CLIP-I 0.80 for DreamBooth on SD and 0.89 between real images of one subject, so
# 0.7 rejects a fine-tune that lost the subject. `pixels`, measured on the local dataset (64 px, the
# generated checker on grey): unseen images of the subject ~0.71, a flat grey image ~0.40 (the
# backgrounds are grey), uniform noise ~0.08, a black image 0.0. So 0.2 is a smoke gate that catches
# noise or black (NaN) output, not an identity check: a flat grey passes it. tests/test_pipeline.py pins
# these. See docs/pipeline.md.
#
# `subject` (the default of a local profile's pipeline): the figures of training/figures.py. Its score
# is `specificity` (subject_fidelity.after - class_leakage.after, in -1..1) and the gate also wants
# subject_fidelity.after >= FIDELITY_GAIN x the base model's (and above it). Measured on the local
# config (docs/training.md): a real fine-tune reaches specificity ~0.7 and a gain of ~11x; a text path
# that ignores the prompt gives exactly 0, a LoRA export without weights a gain of exactly 1x.
SUBJECT_SCORER = "subject"
LOCAL_SCORER = SUBJECT_SCORER
DEFAULT_THRESHOLDS = {"pixels": 0.2, "clip": 0.7, SUBJECT_SCORER: 0.2}
FIDELITY_GAIN = 3.0


def default_threshold(scorer: str) -> float:
    if scorer == SUBJECT_SCORER:
        return DEFAULT_THRESHOLDS[SUBJECT_SCORER]
    return DEFAULT_THRESHOLDS["clip" if scorer.startswith("clip:") else "pixels"]
