"""Executors of the IR: the float reference (`ideal`) interpreter."""
