"""Bundled demo data, demo tokenizer, and the scripts that regenerate them."""
