"""Helpers shared by the integration and reliability tests."""
