"""Post-processing of a raw key: reconciliation, verification, privacy amplification.

Alice and Bob are separate objects (:mod:`.parties`) that exchange messages only over a
classical channel (:mod:`.channel`), which records the public transcript and counts what it
leaks about the key. :mod:`.verify` is the keyed 2-universal hash that checks reconciled
frames, :mod:`.privacy` the Toeplitz hash and the final key length, :mod:`.keyfile` the
final-key and transcript files. ``qkd-hw postprocess`` runs both parties on one raw-key file.
"""
