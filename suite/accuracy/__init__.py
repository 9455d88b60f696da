"""The accuracy stage: what an attention type buys, as paired-seed deltas over a baseline.

``data`` (ImageFolder -> uint8 decode cache), ``augment`` (batched tensor crops and flips),
``recipe`` (per-profile training recipes), ``train`` (one resumable, paired, optionally
distributed run), ``identity`` (what makes two runs comparable), ``stats`` (paired deltas with
t intervals), ``matched`` (the width-matched baseline arms' search), ``sweep`` (the distributed job and the loop over the runs), ``tables`` (the
stage's tables and summary from its records) and ``cli`` (``python -m suite accuracy``).
"""
