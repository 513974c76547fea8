"""Model implementations. Start at catalog.py (every registered model) and lstm.py (the equations)."""
