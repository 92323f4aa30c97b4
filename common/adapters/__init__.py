"""Adapters: implementations of the ports, one package per backend."""
