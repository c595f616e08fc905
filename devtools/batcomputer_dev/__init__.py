"""batcomputer_dev."""
