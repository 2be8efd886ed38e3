"""Training: supervised fine-tuning and preference rounds (DPO/KTO) on one core, with one report."""
