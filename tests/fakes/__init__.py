"""Fakes of external systems (GitHub, the blob host), used only by the tests."""
