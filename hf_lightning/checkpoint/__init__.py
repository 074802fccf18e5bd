"""transformers.Trainer's checkpoint folders on Lightning: layout and safe I/O (`folder`), exact resume (`resume`)."""

from hf_lightning.checkpoint.folder import checkpoint_dir, is_complete, resolve_checkpoint
from hf_lightning.checkpoint.resume import ResumePoint, resume_point

__all__ = ["ResumePoint", "checkpoint_dir", "is_complete", "resolve_checkpoint", "resume_point"]
