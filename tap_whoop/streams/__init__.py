"""The WHOOP v2 endpoints as Singer streams: their shared base, declarations and schemas."""
