"""Findings of an attacker's probe, each pinned by a test against a running 2-process gateway on real stores."""
