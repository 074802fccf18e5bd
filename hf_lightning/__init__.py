"""hf_lightning: the Hugging Face Trainer feature set on PyTorch Lightning."""
