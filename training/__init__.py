"""Headless GravityNet trainer: imports the core (napari_gravity), never the plugin."""
