"""Diagnosis: the probes, the detectors, the report and its plots."""
