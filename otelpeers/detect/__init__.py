"""Detection engine and rules."""
