"""Google Cloud adapters. Each module imports its Google client library on first
use, so importing this package (or a module in it) costs no client import."""
