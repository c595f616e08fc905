"""The Batcomputer model bundle: its format, digests and safe loading.

Training writes bundles with it and the server and fetcher read them with it, so the
format has one definition. ``names`` holds the few names the operator shares with the
fetcher and imports nothing, so the operator needs neither NumPy nor scikit-learn.
"""
