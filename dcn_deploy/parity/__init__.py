"""Parity: every exported model checked against the float64 PyTorch reference (``dcn-deploy validate``)."""
