"""Likelihood-ratio baselines: ALICES (and ALICE, CARL) parameterized ratio estimators."""

from mflow_sbi.baselines.alices import RatioEstimator, RatioTrainingData, alices_loss, train_ratio_estimator

__all__ = ["RatioEstimator", "RatioTrainingData", "alices_loss", "train_ratio_estimator"]
