"""The pipeline's gate: which scorer judges a fine-tune, and the score it must reach to be deployed.

One home for these defaults: the CLI, the Argo WorkflowTemplate values and the pipeline steps all
read them from here.
"""

from __future__ import annotations

DEFAULT_SCORER = "pixels"
# Gate thresholds when none is given. CLIP image similarity: the DreamBooth paper (Ruiz et al. 2023,
# table 1) reports CLIP-I 0.80 for DreamBooth on SD and 0.89 between real images of one subject, so
# 0.7 rejects a fine-tune that lost the subject. `pixels`, measured on the local dataset (64 px):
# unseen images of the subject ~0.40, tiny's outputs ~0.26 (random weights: coloured noise), uniform
# noise ~0.11, a flat grey image ~0.06. So 0.2 is a smoke gate that catches a broken model (flat or
# noise output), not an identity check (a black image, like NaN output, still scores ~0.28: the
# subject's cross is black). tests/test_pipeline.py pins these. See docs/pipeline.md.
DEFAULT_THRESHOLDS = {"pixels": 0.2, "clip": 0.7}


def default_threshold(scorer: str) -> float:
    return DEFAULT_THRESHOLDS["clip" if scorer.startswith("clip:") else "pixels"]
