"""Model evaluation: churn and spend metrics, comparison with the oracle, and a self-contained HTML report."""
