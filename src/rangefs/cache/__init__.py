"""What lands on disk: the chunk value format (pure), chunks being filled (``partial/``), the
chunk store that is the resume checkpoint, the metadata index, and the proof arithmetic the
checkpoint records.
"""
