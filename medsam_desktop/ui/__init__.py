"""The Qt desktop application (the only package that imports Qt)."""
