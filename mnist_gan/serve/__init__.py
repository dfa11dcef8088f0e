"""Serving: the explorer, the live-run view, the web API and the app behind `mnist-gan serve`."""
