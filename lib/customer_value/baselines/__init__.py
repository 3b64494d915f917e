"""Baselines the learned models must beat: RFM rules and the probabilistic BG/NBD + Gamma-Gamma CLV model."""
