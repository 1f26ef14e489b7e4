"""masked-shards: raw SFT and translation data to correctly masked, training-ready token shards."""

__version__ = "0.1.0"
