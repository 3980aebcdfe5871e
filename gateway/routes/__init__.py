"""HTTP routes, one module per concept; each has ``setup(app)`` adding its routes."""
