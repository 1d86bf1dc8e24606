"""Re-identification risk: equivalence classes, k / l / t, GB/T 42460 risk, and the search."""
