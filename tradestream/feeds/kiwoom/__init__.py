"""Kiwoom Securities: the sans-I/O codec (codec.py), the session adapter (adapter.py) and the
broker's record for the registry (broker.py)."""
