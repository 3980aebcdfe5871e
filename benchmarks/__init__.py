"""Benchmarks: each module's ``run()`` measures one claim and returns its figures."""
