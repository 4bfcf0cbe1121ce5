"""Voice backends: speaker encoders and voice converters."""
