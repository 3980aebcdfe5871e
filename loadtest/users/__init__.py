"""Locust users: candidates and payment providers as the gateway sees them at a peak."""
