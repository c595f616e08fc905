"""batcomputer_operator."""
