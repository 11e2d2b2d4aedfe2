"""End-to-end workflows built from the attribution, scoring and evaluation pieces."""
