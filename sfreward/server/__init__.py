"""The reward server: FastAPI app (`app.py`), its settings (`config.py`), dynamic batching across
requests (`batcher.py`) and rollout capture for the next annotation round (`capture.py`)."""
