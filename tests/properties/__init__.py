"""Property-based tests of the pipeline contract (docs: shared/spec/semantics.md).

``strategies`` generates pipelines and faults, ``harness`` runs one generated
case on a backend while recording what every handler saw, ``model`` is the
non-concurrent reference model and ``invariants`` checks a recorded run
against the rules (each check cites its rule id).
"""
