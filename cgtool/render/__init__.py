"""Rendering: the only layer that prints. Library results go in, text/JSON/CSV comes out."""
