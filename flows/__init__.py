"""Prefect flows: thin wiring of deidflow's stages. Flows take paths and ids, never records."""
