"""Computational graphs: the Graph data model, the path engine, symbolic forms, gradient explanations."""
