"""Lua fixtures for the script loader tests."""
