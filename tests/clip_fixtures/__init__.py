"""Helpers shared by the CLIP tests (reference models, photos, token files)."""
