"""Evaluation stage: Face Metrics, Select Best's rule and the guarded sampling rounds."""
