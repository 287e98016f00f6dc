"""Reliability: fault scenarios under load, fuzzing, refused custom resources, and their report."""
