"""Model kinds: what one kind of model adds to the generic request path (base.py draws the hooks)."""
