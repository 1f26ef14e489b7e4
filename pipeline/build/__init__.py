"""Building rows: chat templates, tokenization with offsets and the label rule turn an `Example` into labelled rows. Knows nothing of Beam."""
