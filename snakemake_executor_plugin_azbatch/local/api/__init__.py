"""Batch REST messages and one handler per route: parse, call the model, render."""
