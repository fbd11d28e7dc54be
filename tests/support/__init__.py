"""Helpers for the tests: external servers started and stopped per test."""
