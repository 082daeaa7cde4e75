"""Likelihood-ratio baselines: ALICES (and ALICE, CARL) parameterized ratio estimators."""

from mflow_sbi.baselines.alices import RatioEstimator, RatioTrainingData, train_ratio_estimator

__all__ = ["RatioEstimator", "RatioTrainingData", "train_ratio_estimator"]
