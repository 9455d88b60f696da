"""The accuracy stage: what an attention type buys, as paired-seed deltas over a baseline.

``data`` (ImageFolder -> uint8 decode cache), ``augment`` (batched tensor crops and flips),
``recipe`` (per-profile training recipes), ``train`` (one resumable, paired, optionally
distributed run), ``stats`` (paired deltas with t intervals) and ``cli``
(``python -m suite accuracy``).
"""
