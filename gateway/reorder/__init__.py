"""Reorder loops: when each member runs out of each replenishable product it bought
(``predict``, kept by the ``Predictor`` worker off the sale path). Owns the tables
reorder_events, reorder_predictions and reorder_population (0121_reorder.sql). This is its
public face."""

from gateway.reorder.predict import (
    MIN_BUYERS,
    MIN_OWN_INTERVALS,
    POPULATION_PERCENTILE,
    SAME_PURCHASE,
    Method,
    Population,
    Prediction,
    predict,
    restocks,
)
from gateway.reorder.predictions import (
    REORDER_INTERVAL,
    PredictionPass,
    PredictionRows,
    Predictor,
)

__all__ = [
    "MIN_BUYERS",
    "MIN_OWN_INTERVALS",
    "POPULATION_PERCENTILE",
    "REORDER_INTERVAL",
    "SAME_PURCHASE",
    "Method",
    "Population",
    "Prediction",
    "PredictionPass",
    "PredictionRows",
    "Predictor",
    "predict",
    "restocks",
]
