"""Consent, from the hospital's records to the gate. `registry` owns the append-only log of
consent events and its snapshots; `importers`, `sync` and `cohort` bring events in;
`subject_ids` the canonical spelling of an id; `moment` when a release's consent is judged;
`gate` which subjects may be released (PIPL separate consent); `commands` the
`deidflow consent …` commands. The release drops a record for consent in
`release/prepare.py`, with `gate`'s verdict.
"""
