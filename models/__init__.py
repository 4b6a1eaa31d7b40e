"""Reference models and the scripts that train or export them."""
