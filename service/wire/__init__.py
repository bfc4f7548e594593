"""Tensors on and off the wire: requests decoded and checked against a model's spec, replies encoded."""
