"""Candidate pages and the operators' console: HTML shells, static assets, and how they are served."""
