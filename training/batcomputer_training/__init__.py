"""batcomputer_training."""
