"""Turning a run's table into files (CSV, XLSX) and delivering them."""
