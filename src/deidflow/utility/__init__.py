"""Utility evidence: what a release keeps for the model the recipient will train.

Computed by the validate stage from the consented input and the staged output (and again,
hospital-side, by `deidflow utility`), recorded in the manifest and shown on the review page.
It shows aggregates only, never a record: counts below the policy's small-cell limit are pooled
or withheld, and numeric ranges are cut at rounded percentiles, not at the extremes.

- `measures`: per column information loss (precision, non-uniform entropy) and distributions;
- `groups`: the share of subjects suppressed and the information lost, per sex, age band,
  region and ethnicity, with a flag where a group loses much more than average;
- `model`: one model trained on the original and on the released data, scored on a held-out
  part of the original (scikit-learn);
- `evidence`: the record (`UtilityEvidence`) and the one function that computes it;
- `recompute`: the same, for a published release, from the hospital's own inputs.
"""
