"""A synthetic shop with known ground truth: customers drawn from a documented generative process
(docs/data.md), exported as raw files with dirty data injected and counted in a manifest."""
