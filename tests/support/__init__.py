"""Test helpers shared by the suite (servers, fixtures, data generators)."""
