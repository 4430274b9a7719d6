"""Unlearning methods behind one interface (``base.UnlearningMethod``)."""
