"""Incident response: perceptual hashes of reported images and shared hash lists."""
