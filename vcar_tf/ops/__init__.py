"""Operators with more than one implementation (a portable composite of stock TF ops, and a fused
C++ custom op where it builds)."""
