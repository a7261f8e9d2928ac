"""kopf handlers: one module per kind. They read, decide (with builders/rules) and write (with clients)."""
