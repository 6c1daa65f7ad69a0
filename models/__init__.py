"""Learned detectors behind one small interface (:mod:`tuban.models.detector`).

ultralytics is imported lazily inside :mod:`tuban.models.yolo` only.
"""
