"""Reference models and command-line programs built on the public API of aggressive_vi."""
