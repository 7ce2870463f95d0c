"""Generation engines behind one interface (see base.py); registry by backend name."""
