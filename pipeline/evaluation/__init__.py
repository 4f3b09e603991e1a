"""Evaluating encoders: retrieval metrics (:mod:`.retrieval`), the report's metrics
(:mod:`.metrics`: symmetry robustness, clustering, accuracy prediction), transfer
(:mod:`.transfer`), and writing the report (:mod:`.report`)."""
from pipeline.evaluation.retrieval import evaluate_retrieval, retrieval_metrics, task_labels

__all__ = ["evaluate_retrieval", "retrieval_metrics", "task_labels"]
