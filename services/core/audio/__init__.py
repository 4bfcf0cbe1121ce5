"""Audio in and out: any upload decoded to mono float32 at a model's rate, and every answer format encoded."""
