"""Search spaces as encodings: sample, to text, from text, validate."""
