"""calibration area of FeatherFace Edge."""
