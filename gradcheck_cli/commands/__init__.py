"""The commands: each only wires options to the pipeline and a renderer. The group in cli.py imports each lazily."""
