"""gateway/routes."""
