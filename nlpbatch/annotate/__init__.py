"""Corpus annotation with Ray Data: read -> parse/validate -> tokenize -> predict (actor pool) -> decode -> write."""
