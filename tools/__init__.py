"""Build and release helpers run by make and CI (not shipped to MWAA)."""
