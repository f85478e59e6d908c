"""The paper's evaluation protocol (Sec. 4) and its baselines: ``talkinghead eval``."""
