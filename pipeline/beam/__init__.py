"""The only place Apache Beam is imported: thin composites around the stages, the job's wiring, progress."""
