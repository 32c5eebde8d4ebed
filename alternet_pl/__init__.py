"""alternet-pl: train CNNs, ViTs and AlterNets and measure why they behave as they do."""

__version__ = "0.1.0"
