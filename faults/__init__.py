"""The fault suite (``python -m faults``, ``make faults``): see faults/__main__.py."""
