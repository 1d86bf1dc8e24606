"""deidflow: consent-gated, risk-checked de-identification of clinical data for release."""

__version__ = "0.1.0"
