"""Cargo's vocabulary shared by the mirror and the registry: names, versions, index paths."""
