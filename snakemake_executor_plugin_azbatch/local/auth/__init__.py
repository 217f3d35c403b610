"""Shared Key, bearer tokens, the Entra look-alike, TLS."""
