"""Environments, random policies, rollout files and datasets."""
