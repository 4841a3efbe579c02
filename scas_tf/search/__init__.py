"""Searchers: which architecture encoding is good (ENAS controller + REINFORCE, ...)."""
