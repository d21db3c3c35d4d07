"""Generators of extra training data (the paper's Sec. 5): an interface, implementations, a registry, sharded output."""
