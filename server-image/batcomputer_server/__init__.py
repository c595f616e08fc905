"""batcomputer_server."""
