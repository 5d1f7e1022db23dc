"""Training: typed config, losses, strategies and a custom loop that knows no model by name."""
