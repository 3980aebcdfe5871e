"""Numbered SQL migrations, applied in order by core.migrate."""
