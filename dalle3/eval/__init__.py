"""Evaluation: CLIP score and exact prompt-following checks of trained ldm runs."""
