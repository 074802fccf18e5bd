"""``python -m hf_lightning fit | validate | test | predict | report``."""

from hf_lightning.cli import main

if __name__ == "__main__":
    main()
