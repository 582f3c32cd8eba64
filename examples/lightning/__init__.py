"""The quick-start model (examples/quickstart.py) under PyTorch Lightning and Lightning Fabric.

    python -m examples.lightning [--epochs 4] [--devices 1]     # LightningModule + Trainer
    python -m examples.lightning.fabric [--epochs 4]             # Fabric + AggressiveTrainer

Needs the extra: ``pip install 'aggressive-vi[lightning]'``.
"""
