"""Evidence behind a robustness number (Rebuffi et al. 2021, Figs. 2-5, 10, 11, Tables 1, 6, 7).

`report.py` (training curves of run directories), `audit.py` (the gradient-masking checks of appendix C),
`diversity.py` (nearest-neighbour diversity of augmented/generated sets), `augment_preview.py` (a grid of
augmented images), `output.py` (the report folder and its overwrite rules). Commands: `tfrobust report`,
`tfrobust audit`, `tfrobust diversity`, `tfrobust augment-preview`; see docs/diagnostics.md.
"""
