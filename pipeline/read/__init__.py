"""Reading: raw files and hub data become `Example`s or `Rejected` records. Knows nothing of Beam."""
