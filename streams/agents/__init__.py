"""Thin Faust agents: decode, call pure code in ``rules``, send."""
