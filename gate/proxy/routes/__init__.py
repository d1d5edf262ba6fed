"""HTTP routes of the proxy, one module per upstream API (translation only)."""
