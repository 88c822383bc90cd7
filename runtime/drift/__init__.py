"""Drift: is the camera still seeing what the model was calibrated on? (reference, image checks, monitor)."""
