"""Reference text VAE (He et al., ICLR 2019): LSTM encoder/decoder, corpus loader, generation, CLI.

Run ``python -m examples.text --help``.
"""
