"""Unit tests for the numeric core (models/)."""
