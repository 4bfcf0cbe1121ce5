"""Voice activity detection service: speech segments of uploaded audio."""
