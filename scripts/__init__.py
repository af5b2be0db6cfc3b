"""Chores behind the Makefile targets."""
