"""Training encoders: labelled models (:mod:`.dataset`), training views (:mod:`.augment`), the
contrastive loss (:mod:`.loss`) and the Ray Train loop (:mod:`.trainer`)."""
from pipeline.training.trainer import TrainConfig, fit_encoder, load_training_state, refit_metric_head

__all__ = ["TrainConfig", "fit_encoder", "load_training_state", "refit_metric_head"]
