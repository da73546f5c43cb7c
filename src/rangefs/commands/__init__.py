"""The commands besides mount: prefetch, pin/unpin, status and cache tools, the demo and the
local S3 server it starts.
"""
