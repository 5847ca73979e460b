"""The group level: one table over a run's scans joined with participants' covariates, count
models (statsmodels), and the group report."""
