"""export area of FeatherFace Edge."""
