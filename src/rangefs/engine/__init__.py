"""The read engine: the pure read-ahead policy, the arrival map, the budget, the reader that
coordinates them (fills, demand and read-ahead GETs), and the verifier that checks the bytes
against S3's proof.
"""
