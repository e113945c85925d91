"""The shipped training configs (YAML), installed as package data so `train wavegan` works from a wheel."""
