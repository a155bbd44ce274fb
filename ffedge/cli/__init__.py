"""Thin command-line front ends: argument parsing and messages; the work lives in the package."""
