"""LIIF."""
