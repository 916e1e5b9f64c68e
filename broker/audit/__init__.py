"""Audit evidence: canonical records, value fingerprints, the hash chain, signed checkpoints, sinks, verify.

`canonical`, `fingerprint`, `checkpoint` and `verify` are pure (no server, database or settings
dependency) so that `strongroom audit verify` can check an export offline; keep this file empty of
imports so importing one of them does not pull in the rest.
"""
