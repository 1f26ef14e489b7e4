"""Checking finished shards: validation, inspection, the loader and the smoke test read them back."""
