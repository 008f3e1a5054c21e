"""The page's layout, one module per part; app.py puts them together. Layout and wiring only."""
