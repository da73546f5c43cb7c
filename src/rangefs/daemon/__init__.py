"""The mount process: assembling the parts, its lifecycle, readiness and systemd notification,
logging and metrics.
"""
