"""Clean: bronze -> silver. Types are already enforced; here come dedup, validity, orphans, outliers,
missing values and pseudonymisation. Personal data stops here."""
