"""How a model runs inside its process: the dynamic batcher, request timing, metrics, CPUs, memory, weights."""
