"""Adapters from other export shapes onto the landing layout the pipeline reads."""
