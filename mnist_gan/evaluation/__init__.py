"""Evaluation: the feature classifier, the metrics' maths, the evaluator and its table."""
