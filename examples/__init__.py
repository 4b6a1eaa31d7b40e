"""Built-in example models shipped with imcc."""
