"""Marking generated outputs so a leaked copy can be traced to its request."""
