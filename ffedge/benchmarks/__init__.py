"""benchmarks area of FeatherFace Edge."""
