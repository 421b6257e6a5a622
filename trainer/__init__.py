"""The one training engine every recipe uses: distributed, precision, optimiser, checkpoints, logging."""
