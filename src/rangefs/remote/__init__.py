"""S3 behind an ObjectStore protocol: the only boto3 user, version pinning, retries, and
whether S3 can be reached at all.
"""
